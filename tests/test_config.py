"""Config resolution: defaults < spec < NSDIST_* env < --set; unknown keys and bad types rejected."""

from __future__ import annotations

import os
import re

import pytest

from nsdist.config import JobConfig, TrainConfig, load_config, parse_set
from nsdist.errors import ConfigError


def test_defaults_match_word2vec():
    t = TrainConfig()
    assert (t.dim, t.window, t.negative, t.min_count, t.sample, t.epochs) == (100, 5, 5, 5, 1e-3, 5)
    assert (t.alpha, t.min_alpha, t.ns_exponent, t.seed, t.max_sentence_length) == (0.025, 0.0001, 0.75, 1, 10000)
    assert t.syncs_per_epoch is None and t.shards is None and t.max_vocab is None
    assert [t.rounds(m) for m in (1, 2, 4, 8)] == [4, 4, 8, 16]
    assert t.sync_rows == 1024


def test_precedence(tmp_path):
    spec = tmp_path / "job.yaml"
    spec.write_text("corpus: [a.txt]\nout: o\ndim: 50\nwindow: 3\ntrain:\n  epochs: 2\ncluster:\n  workers: 3\n")
    env = {"NSDIST_WINDOW": "7", "NSDIST_EPOCHS": "4", "NSDIST_CLUSTER__WORKERS": "5"}
    cfg = load_config(str(spec), parse_set(["epochs=9", "train.sample=0"]), environ=env)
    assert cfg.corpus == ("a.txt",) and cfg.out == "o"
    assert (cfg.train.dim, cfg.train.window, cfg.train.epochs, cfg.train.sample) == (50, 7, 9, 0.0)
    assert cfg.cluster.workers == 5
    explicit = load_config(str(spec), environ=env, out="other", **{"cluster.workers": 1})
    assert explicit.out == "other" and explicit.cluster.workers == 1


def test_rate_pivot_null_means_uniform_rates():
    assert load_config(None, parse_set(["rate_pivot=null"]), environ={}).train.rate_pivot is None
    assert load_config(None, {}, environ={}).train.rate_pivot == 5000


@pytest.mark.parametrize("overrides, message", [
    (["dimm=5"], "unknown config key 'dimm'"),
    (["train.dimm=5"], "unknown config key 'train.dimm'"),
    (["dim=abc"], "'train.dim' must be of type int"),
    (["sample=yes"], "'train.sample' must be of type float"),
    (["dim=0"], "train.dim must be >= 1"),
    (["merge=sum"], "train.merge must be one of"),
    (["rate_pivot=0"], "train.rate_pivot must be > 0 or unset"),
    (["syncs_per_epoch=0"], "train.syncs_per_epoch must be >= 1"),
    (["min_alpha=0.5"], "min_alpha"),
    (["dim"], "--set expects key=value"),
    (["negative=0"], "train.negative must be >= 1"),
    (["ns_exponent=.inf"], "train.ns_exponent must be a finite number"),
    (["alpha=.nan"], "train.alpha must be a finite number"),
    (["cluster.workers=0"], r"cluster.workers \(--workers\) must be >= 1"),
    (["cluster.workers=-1"], r"cluster.workers \(--workers\) must be >= 1"),
    (["cluster.threads_per_worker=0"], "cluster.threads_per_worker must be >= 1"),
    (["cluster.timeout=0"], "cluster.timeout must be a positive number"),
])
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, parse_set(overrides), environ={})


def test_bad_spec_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dim: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad), environ={})
    with pytest.raises(ConfigError, match="cannot read job spec"):
        load_config(str(tmp_path / "missing.yaml"), environ={})
    bad.write_text("- 1\n")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_config(str(bad), environ={})


def test_manifest_dict_redacts_storage_options():
    cfg = JobConfig(storage_options={"key": "AKIA-SECRET", "secret": "s3cr3t"})
    d = cfg.to_dict()
    assert "AKIA-SECRET" not in repr(d) and "s3cr3t" not in repr(d)
    assert set(d["storage_options"]) == {"key", "secret"}


def test_example_job_specs_are_valid():
    import glob

    specs = glob.glob(os.path.join(os.path.dirname(__file__), "..", "jobs", "*.yaml"))
    assert specs
    for spec in specs:
        cfg = load_config(spec, environ={})
        assert (cfg.corpus or cfg.edges) and cfg.out, spec


def test_graph_keys_bare_or_sectioned_and_checked():
    cfg = load_config(None, {"q": 0.5, "graph.p": 2, "directed": "false", "edges": "e.parquet"}, environ={})
    assert (cfg.graph.q, cfg.graph.p, cfg.graph.directed, cfg.edges) == (0.5, 2.0, False, ("e.parquet",))
    for bad, message in (({"q": 0}, "graph.q must be a positive number"),
                         ({"p": float("inf")}, "graph.p must be a positive number"),
                         ({"walk_length": 0}, "graph.walk_length must be >= 1"),
                         ({"walks_per_node": 0}, "graph.walks_per_node must be >= 1"),
                         ({"edges": "e.txt", "corpus": "c.txt"}, "a corpus or on a graph's edges, not both"),
                         ({"save_walks": "w/"}, "save_walks (--save-walks) needs a graph")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(None, bad, environ={})


def test_storage_options_mapping_accepted_and_never_echoed():
    cfg = load_config(None, {"storage_options": {"key": "K", "client_kwargs": {"endpoint_url": "http://x"}}},
                      environ={})
    assert cfg.storage_options["client_kwargs"]["endpoint_url"] == "http://x"
    with pytest.raises(ConfigError) as err:
        load_config(None, {"storage_options": "secret-token-123"}, environ={})
    assert "secret-token-123" not in str(err.value)


def test_a_bad_environment_variable_is_named():
    with pytest.raises(ConfigError, match=r"unknown config key 'dimm'.*\(from the environment variable NSDIST_DIMM: "
                                          r"fix or unset it\)"):
        load_config(None, environ={"NSDIST_DIMM": "5", "NSDIST_EPOCHS": "2"})
    with pytest.raises(ConfigError, match=r"'train.dim' must be of type int.*from the environment variable NSDIST_DIM"):
        load_config(None, environ={"NSDIST_DIM": "many"})
    assert load_config(None, {"epochs": 3}, environ={"NSDIST_EPOCHS": "2", "NSDIST_DIM": "7"}).train.epochs == 3


def test_every_path_to_a_config_validates_it(tmp_path):
    """Python constructs the dataclasses directly: they check what the command line checks."""
    from nsdist.config import ClusterConfig, JobConfig, TrainConfig

    with pytest.raises(ConfigError, match="train.merge must be one of mean, weighted, touched, got 'avg'"):
        JobConfig(train=TrainConfig(merge="avg"))
    with pytest.raises(ConfigError, match="'train.dim' must be of type int, got 'abc'"):
        TrainConfig(dim="abc")
    assert TrainConfig(dim="300").dim == 300 and TrainConfig(alpha=1).alpha == 1.0  # as --set reads them
    with pytest.raises(ConfigError, match="cluster.workers"):
        ClusterConfig(workers=0)
    with pytest.raises(ConfigError, match="config section 'train' must be a TrainConfig"):
        JobConfig(train={"dim": 3})
    with pytest.raises(ConfigError, match="checkpoint_every must be >= 0"):
        JobConfig(checkpoint_every=-1)
    with pytest.raises(ConfigError, match="'corpus' must be of type tuple"):
        JobConfig(corpus=[1, 2])
    # Layers are checked once merged: a spec may lower alpha below the default min_alpha when
    # --set lowers min_alpha too.
    spec = tmp_path / "job.yaml"
    spec.write_text("alpha: 0.00005\n")
    cfg = load_config(str(spec), parse_set(["min_alpha=0.00001"]), environ={})
    assert (cfg.train.alpha, cfg.train.min_alpha) == (0.00005, 0.00001)
