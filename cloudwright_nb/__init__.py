"""cloudwright-nb: CloudWright's state module and CloudFlow, for Jupyter and Google Cloud.

    from cloudwright_nb import CloudWright
    state = CloudWright.get_module("state")
    cloudflow = CloudWright.get_module("cloudflow")

Importing this package loads neither IPython, ipywidgets nor any Google library.
"""

from .app import CloudWright, Runtime
from .errors import (
    ApplicationNameError,
    CloudWrightError,
    ConfigurationError,
    ConflictError,
    DriverMissingError,
    FlowError,
    InvalidDurationError,
    InvalidInputError,
    InvalidKeyError,
    InvalidRunIdError,
    InvalidStepError,
    InvalidValueError,
    KeyTypeError,
    MasterKeyError,
    RunNotFoundError,
    RunStateError,
    StateDecryptionError,
    StateError,
    StateKeyError,
    StepMismatchError,
    StoreError,
    StoreURLError,
    UnknownModuleError,
    UnstorableValueError,
    ValueTooLargeError,
)
from .flow.model import FlowRun
from .flow.outcomes import CONTINUE, FAIL, RERUN, step

__version__ = "0.1.0"


def load_ipython_extension(ipython) -> None:
    """Register `%cloudflow` and `%state`; IPython calls this on `%load_ext cloudwright_nb`."""
    from .notebook.magics import load

    load(ipython)


__all__ = [
    "CONTINUE",
    "FAIL",
    "RERUN",
    "ApplicationNameError",
    "CloudWright",
    "CloudWrightError",
    "ConfigurationError",
    "ConflictError",
    "DriverMissingError",
    "FlowError",
    "FlowRun",
    "InvalidDurationError",
    "InvalidInputError",
    "InvalidKeyError",
    "InvalidRunIdError",
    "InvalidStepError",
    "InvalidValueError",
    "KeyTypeError",
    "MasterKeyError",
    "RunNotFoundError",
    "RunStateError",
    "Runtime",
    "StateDecryptionError",
    "StateError",
    "StateKeyError",
    "StepMismatchError",
    "StoreError",
    "StoreURLError",
    "UnknownModuleError",
    "UnstorableValueError",
    "ValueTooLargeError",
    "step",
]
