"""Clone lineage: which share came from which snapshot, as a tree for a share's page.

Owns ``lineage_tree(service, share_id)``: it walks up from a share through
``origin_snapshot_id`` to the oldest ancestor still there, then down through
every snapshot and the shares cloned from it. Read-only service calls; it must
not render anything (the template draws the nested lists).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from acmenfs.appliance.errors import NotFound


@dataclass
class SnapshotNode:
    snapshot: Any
    clones: list["ShareNode"] = field(default_factory=list)


@dataclass
class ShareNode:
    share: Any
    current: bool = False
    snapshots: list[SnapshotNode] = field(default_factory=list)
    missing_origin: str | None = None  # origin snapshot id that no longer exists


def _root_of(service, share) -> tuple[Any, str | None]:
    """The oldest ancestor of ``share`` still there, and its vanished origin snapshot id if any."""
    seen = {share.id}
    while share.origin_snapshot_id:
        try:
            snapshot = service.get_snapshot(share.origin_snapshot_id)
            parent = service.get_share(snapshot.share_id)
        except NotFound:
            return share, share.origin_snapshot_id
        if parent.id in seen:  # cannot happen, but never loop
            break
        seen.add(parent.id)
        share = parent
    return share, None


def lineage_tree(service, share_id: str) -> ShareNode:
    """The family tree holding ``share_id`` (its node marked ``current``)."""
    share = service.get_share(share_id)
    clones_of: dict[str, list[Any]] = {}
    for other in service.list_shares():
        if other.origin_snapshot_id:
            clones_of.setdefault(other.origin_snapshot_id, []).append(other)
    root, missing = _root_of(service, share)

    def build(node_share, depth: int) -> ShareNode:
        node = ShareNode(node_share, current=node_share.id == share_id)
        if depth > 64:
            return node
        for snapshot in service.list_snapshots(node_share.id):
            children = sorted(clones_of.get(snapshot.id, []), key=lambda s: s.created_at)
            node.snapshots.append(SnapshotNode(snapshot, [build(child, depth + 1) for child in children]))
        return node

    tree = build(root, 0)
    tree.missing_origin = missing
    return tree


def tree_size(node: ShareNode) -> int:
    """How many shares the tree holds."""
    return 1 + sum(tree_size(child) for snap in node.snapshots for child in snap.clones)
