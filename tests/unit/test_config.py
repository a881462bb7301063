import pytest

from pink.config import load
from pink.errors import ConfigError


def test_defaults_without_a_file(tmp_path):
    cfg = load(str(tmp_path / "absent.toml"), env={})
    assert cfg.etcd.endpoints == ("127.0.0.1:2379",)
    assert cfg.worker.network == "none"


def test_file_then_environment_overrides(tmp_path):
    path = tmp_path / "pink.toml"
    path.write_text('[etcd]\nendpoints = ["10.0.0.1:2379", "10.0.0.2:2379"]\n[worker]\nname = "gpu1"\nlease_ttl_s = 12\n')
    cfg = load(str(path), env={"PINK_WORKER_LEASE_TTL_S": "15", "PINK_WORKER_DRAIN": "yes"})
    assert cfg.etcd.endpoints == ("10.0.0.1:2379", "10.0.0.2:2379")
    assert cfg.worker.name == "gpu1"
    assert cfg.worker.lease_ttl_s == 15
    assert cfg.worker.drain is True


@pytest.mark.parametrize("text,message", [
    ("[worker]\nlease_ttl_s = \"soon\"\n", "worker.lease_ttl_s"),
    ("[worker]\nbogus = 1\n", "unknown key"),
    ("[nope]\n", "unknown section"),
    ("[worker\n", "cannot read config file"),
    ("[worker]\nlease_ttl_s = 2\n", "at least 3 x worker.loop_interval_s"),
    ("[etcd]\nendpoints = []\n", "etcd.endpoints is empty"),
    ("[web]\ntrusted_proxies = [\"lb.example.org\"]\n", "web.trusted_proxies: 'lb.example.org' is not an IP"),
    ("[worker]\noutput_retention_days = -1\n", r"worker.output_retention_days \(-1.0\) must be 0"),
])
def test_bad_values_name_the_key(tmp_path, text, message):
    path = tmp_path / "pink.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load(str(path), env={})


def test_bad_environment_value(tmp_path):
    with pytest.raises(ConfigError, match="worker.drain"):
        load(str(tmp_path / "x.toml"), env={"PINK_WORKER_DRAIN": "maybe"})
