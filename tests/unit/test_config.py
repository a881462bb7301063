import pytest

from pink.config import load
from pink.model import parse_size
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


def test_worker_datasets_and_per_job_resources(tmp_path):
    path = tmp_path / "pink.toml"
    path.write_text('[worker]\ncpus_per_job = 2\nmemory_per_job = "8g"\nshm_per_job = "1g"\n'
                    'max_cpus_per_job = 16\nmax_memory_per_job = "64GiB"\n'
                    '[worker.datasets]\nimagenet = "/srv/imagenet"\n"coco-2017" = "/srv/coco"\n')
    w = load(str(path), env={}).worker
    assert w.datasets == {"imagenet": "/srv/imagenet", "coco-2017": "/srv/coco"}
    assert (w.cpus_per_job, w.memory_per_job_bytes, w.shm_per_job_bytes) == (2, 8 << 30, 1 << 30)
    assert (w.max_cpus_per_job, w.max_memory_per_job_bytes) == (16, 64 << 30)
    # The environment replaces the whole table.
    w = load(str(path), env={"PINK_WORKER_DATASETS": "mnist=/data/mnist, places=/srv/places"}).worker
    assert w.datasets == {"mnist": "/data/mnist", "places": "/srv/places"}


def test_worker_defaults_mean_no_limits_and_no_datasets(tmp_path):
    w = load(str(tmp_path / "absent.toml"), env={}).worker
    assert w.datasets == {}
    assert (w.cpus_per_job, w.memory_per_job_bytes, w.shm_per_job_bytes) == (0, 0, 0)
    assert (w.max_cpus_per_job, w.max_memory_per_job_bytes) == (0, 0)
    assert (w.pids_limit, w.max_log_bytes, w.max_output_bytes) == (4096, 100 << 20, 20 << 30)
    assert (w.max_disk_bytes, w.disk_check_interval_s) == (50 << 30, 30.0)


def test_the_caps_are_set_by_file_or_environment(tmp_path):
    path = tmp_path / "pink.toml"
    path.write_text("[worker]\nmax_log_bytes = 1048576\nmax_output_bytes = 1073741824\n")
    w = load(str(path), env={"PINK_WORKER_MAX_OUTPUT_BYTES": "2147483648"}).worker
    assert (w.max_log_bytes, w.max_output_bytes) == (1 << 20, 2 << 30)
    w = load(str(path), env={"PINK_WORKER_MAX_DISK_BYTES": "0", "PINK_WORKER_DISK_CHECK_INTERVAL_S": "0.5"}).worker
    assert (w.max_disk_bytes, w.disk_check_interval_s) == (0, 0.5)  # 0: no cap


@pytest.mark.parametrize("text,message", [
    ('[worker]\nmemory_per_job = "lots"\n', "worker.memory_per_job: 'lots' is not a size"),
    ('[worker]\nmax_memory_per_job = "1m"\n', r"worker.max_memory_per_job \(1m\) must be at least 6 MiB"),
    ('[worker]\nshm_per_job = "1k"\n', r"worker.shm_per_job \(1k\) must be at least 1 MiB"),
    ("[worker]\ncpus_per_job = -1\n", r"worker.cpus_per_job \(-1.0\) must be 0 or more"),
    ("[worker]\ncpus_per_job = 8\nmax_cpus_per_job = 4\n", "is more than worker.max_cpus_per_job"),
    ('[worker]\nmemory_per_job = "8g"\nmax_memory_per_job = "4g"\n', "is more than worker.max_memory_per_job"),
    ('[worker.datasets]\nImageNet = "/srv/imagenet"\n', "'ImageNet' is not a dataset name"),
    ('[worker.datasets]\nimagenet = "srv/imagenet"\n', "the path of imagenet .* must be absolute"),
    ('[worker]\ndatasets = "imagenet"\n', "worker.datasets"),
    ('[worker.datasets]\nimagenet = 3\n', "worker.datasets"),
    ("[worker]\nmax_log_bytes = 1000\n", r"worker.max_log_bytes \(1000\) must be at least 65536"),
    ("[worker]\nmax_output_bytes = 0\n", r"worker.max_output_bytes \(0\) must be at least 1048576"),
    ('[worker]\nmax_output_bytes = "20g"\n', "worker.max_output_bytes: '20g' is not a valid int"),
    ("[worker]\nmax_disk_bytes = 1048576\n", r"worker.max_disk_bytes \(1048576\) must be 0 \(no cap\) or at least 67108864"),
    ("[worker]\nmax_disk_bytes = -1\n", r"worker.max_disk_bytes \(-1\) must be 0"),
    ("[worker]\ndisk_check_interval_s = 0\n", r"worker.disk_check_interval_s \(0.0\) must be more than 0"),
    ("[worker]\npids_limit = -1\n", r"worker.pids_limit \(-1\) must be at least 16"),
    ("[worker]\nmax_parallel_jobs = 0\n", r"worker.max_parallel_jobs \(0\) must be at least 1"),
])
def test_bad_resources_and_datasets_name_the_key(tmp_path, text, message):
    path = tmp_path / "pink.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load(str(path), env={})


@pytest.mark.parametrize("text,size", [
    ("16g", 16 << 30), ("512m", 512 << 20), ("1.5g", 3 << 29), ("16GiB", 16 << 30), ("8gb", 8 << 30),
    ("100", 100), ("100b", 100), ("2k", 2048), ("1t", 1 << 40), (" 4 G ", 4 << 30), (0, 0), (7, 7),
])
def test_parse_size_reads_dockers_syntax(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "g", "-1", "1x", "1ib", "1.g", "1e3", True, 1.5, -3, None])
def test_parse_size_refuses_the_rest(text):
    with pytest.raises(ValueError):
        parse_size(text)
