"""daskray.planning.place on hand-made graphs (no Ray): which tasks get a soft node affinity."""

from __future__ import annotations

from daskray import planning

AFF = "scheduling_strategy"


def place(indptr, indices, located, of, options, min_bytes):
    """``planning.place`` on classes ``of``/``options``, as ``(of, options, home)``; the
    classes given are left as they were."""
    given = planning.Classes(options[0], None if of is None else list(of), options)
    before = (given.of, list(given.options))
    placed, home = planning.place(indptr, indices, located, given, min_bytes)
    assert (given.of, given.options) == before
    return placed.of, placed.options, home


def csr(deps: list[list[int]]):
    indptr, indices = [0], []
    for d in deps:
        indices.extend(d)
        indptr.append(len(indices))
    return indptr, indices


def test_chains_follow_their_block_and_merges_take_the_heavier_side():
    # 0 (A, 10) -> 2 -> 4 ; 1 (B, 30) -> 3 -> 5 ; 6 reads 4 and 5 ; 7 reads nothing located
    indptr, indices = csr([[], [], [0], [1], [2], [3], [4, 5], []])
    classes, options, home = place(indptr, indices, {0: ("A", 10), 1: ("B", 30)}, None, [{}], 5)
    assert home == {2: "A", 4: "A", 3: "B", 5: "B", 6: "B"}
    assert classes[0] == classes[1] == classes[7] == 0  # the values and unrelated tasks
    assert options[classes[2]] == {AFF: ("node_affinity", "A", True)}
    assert classes[2] == classes[4] and classes[3] == classes[5] == classes[6] != classes[2]
    assert len(options) == 3


def test_small_inputs_leave_ray_free():
    indptr, indices = csr([[], [], [0], [1], [2, 3]])
    # 4 reads 6 bytes in all, but no node holds 4 of them
    located = {0: ("A", 3), 1: ("B", 3)}
    assert place(indptr, indices, located, None, [{}], 4) == (None, [{}], {})
    assert place(indptr, indices, located, None, [{}], 3)[2] == {2: "A", 3: "B", 4: "A"}


def test_existing_classes_keep_their_options_and_a_user_strategy_wins():
    indptr, indices = csr([[], [0], [0], [0]])
    base = {"num_cpus": 2}
    pinned = {"num_cpus": 2, AFF: ("node_affinity", "C", False)}
    gpu = {"num_cpus": 2, "num_gpus": 1}
    classes, options, home = place(
        indptr, indices, {0: ("A", 100)}, [0, 0, 1, 2], [base, pinned, gpu], 1
    )
    assert set(home) == {1, 2, 3}
    assert classes[2] == 1  # the user's affinity stays
    assert options[classes[1]] == {**base, AFF: ("node_affinity", "A", True)}
    assert options[classes[3]] == {**gpu, AFF: ("node_affinity", "A", True)}
    assert options[:3] == [base, pinned, gpu]  # nothing changed in place


def test_a_class_that_already_exists_is_reused():
    indptr, indices = csr([[], [0], []])
    same = {AFF: ("node_affinity", "A", True)}
    classes, options, _ = place(indptr, indices, {0: ("A", 9)}, [0, 0, 1], [{}, same], 1)
    assert classes == [0, 1, 1] and options == [{}, same]


def test_nothing_located():
    indptr, indices = csr([[], [0]])
    assert place(indptr, indices, {}, None, [{}], 1) == (None, [{}], {})
