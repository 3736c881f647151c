"""The subcommands of ``sweeps`` beyond ``run`` and ``table``: their options, handlers and text.

Each module registers one subcommand (``register(subparsers)``), parses its options, calls the
domain module that does the work (which returns data) and prints the result:

* :mod:`~sweeps.commands.compare` -> :mod:`sweeps.stats`
* :mod:`~sweeps.commands.leaderboard` -> :mod:`sweeps.leaderboard`
* :mod:`~sweeps.commands.parse_log` -> :mod:`sweeps.logparse`
* :mod:`~sweeps.commands.report` -> :mod:`sweeps.htmlreport`
* :mod:`~sweeps.commands.verify` -> :mod:`sweeps.verify`
"""
