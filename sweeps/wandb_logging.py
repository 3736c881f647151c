"""Ray Tune's W&B logger callback, with its per-trial logging actor closing wandb itself.

Imported only when ``--track wandb`` is asked for (it imports wandb). Ray runs each trial's
``wandb.init`` ... ``wandb.finish`` in an actor and kills that actor once it returns; wandb's own
exit hook then tears down its service process, which Ray has already ended with the actor, and
prints a ``ConnectionResetError`` traceback into the driver's output. Tearing wandb down while the
actor still lives, right after ``finish``, leaves that hook nothing to do. Everything else is
Ray's ``WandbLoggerCallback`` unchanged.
"""

from __future__ import annotations

from ray.air.integrations.wandb import WandbLoggerCallback, _WandbLoggingActor


class ClosingWandbLoggingActor(_WandbLoggingActor):
    def run(self) -> None:
        super().run()
        self._wandb.teardown()


class WandbCallback(WandbLoggerCallback):
    _logger_actor_cls = ClosingWandbLoggingActor
