"""The last step of a generic migration, on the destination backend: ``update_migrated_volume``.

Owns: the model update the driver hands back after Cinder copied a volume into a
new share, and renaming the new share's volume file back to the original name.

Must not: return ``provider_id``. The manager applies the model update to the
volume and the volume's previous values of the same keys to the temporary one;
then ``Volume.finish_volume_migration`` swaps every field between the two except
``id``, ``provider_location`` and a few others. A key in both places is swapped
twice, i.e. not at all: with ``provider_id`` the volume kept the old share's id
(with the new share's location) and the manager deleted the new share. So the
update holds what Cinder's own NfsDriver returns, ``_name_id`` and
``provider_location`` (which the swap skips); ``provider_id`` moves with the
swap. After it both name the new share, and the temporary row (deleted on the
source backend) holds the old share's id and location.
"""

from __future__ import annotations

from typing import Any, Callable

from oslo_config import cfg
from oslo_log import log as logging

from cinder import exception

from acmenfs.cinder.appliance_client import ApplianceClient, ApplianceError

CONF = cfg.CONF
LOG = logging.getLogger(__name__)


def migrated_volume_update(client: ApplianceClient, find_share: Callable[[Any], dict], volume: Any,
                           new_volume: Any, original_volume_status: str, owner: dict[str, int]) -> dict:
    """``_name_id`` and ``provider_location`` for the migrated volume.

    An available volume's file is renamed after the volume's id (``_name_id``
    None: not ``volume.name``, which an earlier migration may have based on
    another id); an attached one, or a failed rename, keeps the new name
    (``_name_id`` the temporary volume's), as in Cinder's NfsDriver.
    """
    update = {"provider_location": new_volume.provider_location}
    if original_volume_status == "available":
        try:
            client.put_volume(find_share(new_volume)["id"], CONF.volume_name_template % volume.id, **owner)
            return {"_name_id": None, **update}
        except (ApplianceError, exception.VolumeBackendAPIException) as error:
            LOG.warning("acmenfs: could not rename migrated volume file %(new)s to %(old)s: %(error)s",
                        {"new": new_volume.name, "old": volume.name, "error": error})
    return {"_name_id": new_volume._name_id or new_volume.id, **update}
