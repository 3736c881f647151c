"""golf: the Parameter Golf train -> quantize -> eval pipeline that runs inside one trial."""

__version__ = "0.1.0"
