import pytest
import torch

from lumenkit.errors import ConfigError
from lumenkit.runtime.devices import resolve_device


def test_resolve_device_reads_the_documented_names_and_refuses_others_in_one_line():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match=r"unknown device 'gpu'; use auto, cpu, cuda, cuda:N \(or mps\)"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU is available"):
            resolve_device("cuda:1")
