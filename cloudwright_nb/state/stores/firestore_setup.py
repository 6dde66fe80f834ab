"""`cloudwright firestore setup`: the TTL policies that let Firestore delete expired records.

Each collection group that contains records gets a TTL policy on its `expires_at` field. Firestore
deletes a document typically within a day after that time; reads skip expired records before
then, so the policy frees space and changes nothing a user can see.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ...errors import ConfigurationError
from .firestore import TTL_COLLECTION_GROUPS

TTL_FIELD = "expires_at"


def setup_ttl(project: str, database: str, echo: Callable[[str], None] = print) -> int:
    """Create the TTL policies that are missing and report the ones that exist.

    Returns how many policies were created. Against the emulator, which has no TTL policies,
    it prints that and does nothing.
    """
    emulator = os.environ.get("FIRESTORE_EMULATOR_HOST")
    if emulator:
        echo(
            f"FIRESTORE_EMULATOR_HOST is set ({emulator}): the emulator has no TTL policies, "
            "so there is nothing to set up; expired records are still skipped by every read"
        )
        return 0

    from google.api_core import exceptions as google_errors
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud.firestore_admin_v1 import FirestoreAdminClient
    from google.cloud.firestore_admin_v1.types import Field

    try:
        admin = FirestoreAdminClient()
    except DefaultCredentialsError:
        raise ConfigurationError(
            "no Google credentials: run `gcloud auth application-default login` or set "
            "GOOGLE_APPLICATION_CREDENTIALS"
        ) from None

    created = 0
    for group in TTL_COLLECTION_GROUPS:
        name = (
            f"projects/{project}/databases/{database}/collectionGroups/{group}/fields/{TTL_FIELD}"
        )
        try:
            field = admin.get_field(name=name)
            state = field.ttl_config.state if "ttl_config" in field else None
        except google_errors.NotFound:
            state = None
        except google_errors.GoogleAPICallError as error:
            raise ConfigurationError(
                f"cannot read the TTL policy {name}: {error.message}"
            ) from None

        if state is not None and state != Field.TtlConfig.State.STATE_UNSPECIFIED:
            echo(f"{group}.{TTL_FIELD}: TTL policy exists ({state.name})")
            continue
        try:
            admin.update_field(
                field=Field(name=name, ttl_config=Field.TtlConfig()),
                update_mask={"paths": ["ttl_config"]},
            )
        except google_errors.GoogleAPICallError as error:
            raise ConfigurationError(
                f"cannot create the TTL policy {name}: {error.message}; the account needs the "
                "datastore.indexes.update permission (role Cloud Datastore Index Admin)"
            ) from None
        created += 1
        echo(f"{group}.{TTL_FIELD}: TTL policy requested; Firestore builds it in the background")
    return created
