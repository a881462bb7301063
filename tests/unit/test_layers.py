"""Chain ids and held-layer prefixes for thin uploads (pink.layers)."""

from __future__ import annotations

import hashlib

import pytest

from pink.layers import chain_ids, held_entry, held_prefix, parse_held

pytestmark = pytest.mark.unit

A, B, C, D = (f"sha256:{hashlib.sha256(x.encode()).hexdigest()}" for x in "abcd")


def test_chain_ids_follow_dockers_definition():
    c1, c2 = chain_ids([A, B])
    assert c1 == A
    assert c2 == "sha256:" + hashlib.sha256(f"{A} {B}".encode()).hexdigest()
    assert chain_ids([]) == []


def test_a_worker_holds_the_longest_common_bottom_of_an_image():
    held = parse_held([held_entry("sha256:img1", [A, B, C])])
    assert held_prefix([A, B, D], held) == 2  # differs in its top layer only
    assert held_prefix([A, B, C, D], held) == 3  # one more layer on top
    assert held_prefix([B, C], held) == 0  # same diff_ids on another base: another chain


def test_only_the_callers_images_count_and_old_entries_are_ignored():
    held = parse_held([held_entry("sha256:mine", [A]), held_entry("sha256:theirs", [A, B]), B])
    assert set(held) == {"sha256:mine", "sha256:theirs"}
    assert held_prefix([A, B], held, images={"sha256:mine"}) == 1
    assert held_prefix([A, B], held, images=set()) == 0
    assert held_prefix([A, B], held) == 2
