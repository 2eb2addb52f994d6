"""Both ends of provisioning on one machine: for the lab, the HIL bench and tests.

It runs exactly the technician's steps (keygen on the node folder, enrol and bundle at
HQ, install on the node folder) with the same checks; only the carrying of files between
machines is skipped.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from provisioning import enroll, hqsetup, nodeside
from provisioning import state as hq_state
from provisioning.bundle import fingerprint


@dataclass(frozen=True)
class ProvisionedNode:
    """A node folder ready for `alpr-node run --config config`."""

    node_id: str
    data_dir: Path
    config: Path
    bundle: Path


def hq_key_id(hq_dir: Path) -> str:
    """HQ's signing key fingerprint, as a technician would type it."""
    return fingerprint(hqsetup.sign_raw(hq_state.load(hq_dir)))


def provision_node(hq_dir: Path, data_dir: Path, node_id: str, *, site: str = "site-1", actor: str = "lab",
                   camera: str = "cam0", extra_toml: str | None = None, user: str | None = None) -> ProvisionedNode:
    """keygen → enroll → bundle → install for one node; returns where its config is."""
    pin = hq_key_id(hq_dir)
    made = nodeside.keygen(data_dir, node_id, actor=actor, user=user, hq_key_id=pin)
    enroll.enroll(hq_dir, made.request, site=site, actor=actor, camera=camera, expect_fingerprint=made.fingerprint)
    bundle = enroll.make_bundle(hq_dir, node_id, actor=actor)
    done = nodeside.install(bundle, data_dir, actor=actor, extra_toml=extra_toml)
    return ProvisionedNode(node_id, Path(data_dir).resolve(), done.config, bundle)


def rotate_node_key(hq_dir: Path, data_dir: Path, *, actor: str = "lab", grace_hours: float = 24.0) -> str:
    """rotate-key → add-key → bundle → install; returns the new key id."""
    made = nodeside.rotate_key(data_dir, actor=actor)
    enroll.add_key(hq_dir, made.request, actor=actor, grace_hours=grace_hours)
    bundle = enroll.make_bundle(hq_dir, made.node_id, actor=actor)
    nodeside.install(bundle, data_dir, actor=actor)
    return made.sign_key_id
