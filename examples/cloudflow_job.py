# The three-step CloudFlow example from CloudWright's documentation of its built-in modules.
#
# Changes from the original sample:
# - the import line, which CloudWright's own runtime made unnecessary;
# - `custom_inputs`, never defined in the sample, is now the application's inputs;
# - `else if` is `elif`, with its missing colon, and `stats` is `status`;
# - the final `return cloudflow.RERUN` is dedented so that it can run;
# - `context.get("job_id)` has its closing quote;
# - `cloudflow.run` names the second step `wait_completion`, as it is defined,
#   instead of `wait_for_job`.
#
# `data_engine` and `gmail` are CloudWright template modules. Locally they are the stand-ins
# in examples/modules (`pip install -e examples/modules`): a job that crunches a CSV in a
# child process, and an email sender that writes .eml files unless SMTP_HOST is set.
from cloudwright_nb import CloudWright

# Any code outside of a method will execute every time CloudFlow checks for step
# completion; we can set up modules and get inputs here.
cloudflow = CloudWright.get_module("cloudflow")
data_engine = CloudWright.get_module("data_engine")
email = CloudWright.get_module("gmail")
notify_email = CloudWright.inputs.get("notification_email")
custom_inputs = dict(CloudWright.inputs)

# This step launches a job against the remote 'data_engine' service, and
# marks the step as complete
def launch_job(context):
  job_id = data_engine.start_job(custom_inputs)
  # Store the `job_id` in our context object so we can check the status
  # in later steps
  context.set("job_id", job_id)
  return cloudflow.CONTINUE

# Retry this step until the remote job has either completed or failed
def wait_completion(context):
  job_id = context.get("job_id")
  status = data_engine.get_job(job_id).status
  if status == "complete":
    return cloudflow.CONTINUE
  elif status == 'failed':
    return cloudflow.FAIL
  return cloudflow.RERUN

# Once the job is complete, email the user to let them know
def email_user(context):
  job_id = context.get("job_id")
  email.send_email(f"Job Complete: {job_id}", "Job complete", notify_email)
  return cloudflow.CONTINUE

# `cloudflow.run` takes a list of steps and executes them in order
cloudflow.run(launch_job, wait_completion, email_user)
