"""The deployed function's entry point, `cloudwright serve`, and `cloudwright bundle`."""
