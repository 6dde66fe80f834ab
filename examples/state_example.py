# The persistent state example from CloudWright's documentation of its built-in modules.
#
# Changes from the original sample:
# - the import line, which CloudWright's own runtime made unnecessary;
# - the `print(state.get("last_run"))` line, lost from the published sample below its comment.
from cloudwright_nb import CloudWright

from datetime import datetime

state = CloudWright.get_module("state")

# Prints the timestamp of the previous run
print(state.get("last_run"))

# Update the time that script was last run
state.set("last_run", datetime.now().timestamp())

# All of the following are valid state values
state.set("my-boolean-value", True)

state.set("my-numeric-value", 10)

state.set("my-dict-value", {"dict-key" : "dict-value"})
