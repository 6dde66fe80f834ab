"""Every exception cloudwright-nb raises, in one place.

All of them derive from `CloudWrightError`. Where Python code expects a built-in type, the
error is that type too: an unstorable value is a `TypeError`, a missing `state[key]` a `KeyError`.
"""

from __future__ import annotations


class CloudWrightError(Exception):
    """Base class of every error raised by cloudwright-nb."""


# Configuration: the application, the store URL, the master key, modules, durations.


class ConfigurationError(CloudWrightError):
    """Raised when the environment or the arguments do not describe a usable set-up."""


class ApplicationNameError(ConfigurationError, ValueError):
    """Raised when the application name is missing or invalid."""


class StoreURLError(ConfigurationError, ValueError):
    """Raised when a store URL has an unknown scheme or a malformed path."""


class DriverMissingError(ConfigurationError, ImportError):
    """Raised when a store or feature needs an optional package that is not installed."""


class MasterKeyError(ConfigurationError):
    """Raised when no master key is available or a configured key is malformed."""


class UnknownModuleError(ConfigurationError, LookupError):
    """Raised by `CloudWright.get_module` for a name that no built-in or plug-in provides."""


class InvalidDurationError(ConfigurationError, ValueError):
    """Raised when an interval, timeout or delay is zero, negative or unparsable."""


class InvalidInputError(ConfigurationError, ValueError):
    """Raised when an application input is not a `key=value` pair or has an empty key."""


# State: keys, values, records.


class StateError(CloudWrightError):
    """Base class of errors raised by the state module and run contexts."""


class InvalidKeyError(StateError, ValueError):
    """Raised when a key is empty or longer than 1,024 characters."""


class KeyTypeError(StateError, TypeError):
    """Raised when a key is not a string."""


class UnstorableValueError(StateError, TypeError):
    """Raised when a value contains something JSON cannot represent, such as a datetime."""


class InvalidValueError(StateError, ValueError):
    """Raised for NaN or Infinity, a circular reference, or a ttl outside the allowed range."""


class ValueTooLargeError(StateError, ValueError):
    """Raised when a value is larger than 900 KiB once encoded as JSON."""


class StateKeyError(StateError, KeyError):
    """Raised by `state[key]` when the key is missing or expired."""

    def __str__(self) -> str:
        # KeyError.__str__ wraps its argument in quotes, which garbles a sentence.
        return str(self.args[0]) if self.args else ""


class StateDecryptionError(StateError):
    """Raised when a record cannot be decrypted: a wrong master key or a tampered record."""


class StoreError(StateError):
    """Raised when the store itself fails, for example an unreadable database file."""


class ConflictError(StoreError):
    """Raised when an atomic update still conflicts after its retries."""


# CloudFlow: runs, steps, leases.


class FlowError(CloudWrightError):
    """Base class of errors raised by CloudFlow."""


class RunNotFoundError(FlowError, LookupError):
    """Raised when no run with the given id exists in the application."""


class InvalidRunIdError(FlowError, ValueError):
    """Raised when a run id is empty, too long, or has characters other than [A-Za-z0-9._-]."""


class RunStateError(FlowError):
    """Raised when a run's status does not allow the operation, such as retrying a success."""


class StepMismatchError(FlowError):
    """Raised when a run is resumed with a different list of step names than it started with."""


class InvalidStepError(FlowError, TypeError):
    """Raised when something passed as a step is not a function or has the wrong options."""
