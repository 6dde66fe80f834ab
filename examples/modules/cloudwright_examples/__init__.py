"""Local stand-ins for the CloudWright modules that the examples use.

``data_engine`` runs real CSV jobs as child processes and ``gmail`` sends mail through
SMTP or writes ``.eml`` files. They serve the examples only and are not part of the
cloudwright-nb library. cloudwright-nb finds them through the ``cloudwright_nb.modules``
entry points that this package declares.
"""
