"""The evaluation network of a genotype (DARTS' NetworkCIFAR, arXiv 1806.09055) behind the backbone contract."""

import pytest
import torch

from vipr.errors import ConfigError
from vipr.models import create_backbone
from vipr.nas.genotype import DARTS_V2, CellSpec, Edge, Genotype, from_dict
from vipr.nas.network import DartsNetwork, drop_path


def per_cell_genotype(layers: int = 5) -> Genotype:
    """A GOLD-NAS-style genotype: one spec per cell, nodes with one to three inputs, all nodes concatenated."""
    normal = CellSpec((Edge("sep_conv_3x3", 0, 2), Edge("skip_connect", 1, 2), Edge("skip_connect", 2, 3),
                       Edge("sep_conv_3x3", 0, 4), Edge("sep_conv_3x3", 3, 4), Edge("skip_connect", 1, 4)), (2, 3, 4))
    reduce = CellSpec((Edge("skip_connect", 0, 2), Edge("sep_conv_3x3", 1, 3), Edge("skip_connect", 2, 4)),
                      (2, 3, 4), reduction=True)
    cells = tuple(reduce if i in (layers // 3, 2 * layers // 3) else normal for i in range(layers))
    return Genotype(normal, reduce, steps=3, cells=cells).validate()


@pytest.mark.parametrize("genotype", [DARTS_V2, per_cell_genotype()], ids=["darts_v2", "per_cell"])
def test_forward_backward_with_auxiliary_and_drop_path(genotype, one_thread):
    torch.manual_seed(0)
    net = DartsNetwork(genotype, channels=4, layers=5, num_classes=3, auxiliary=True, drop_path_prob=0.3).train()
    x = torch.randn(4, 3, 16, 16)
    features, aux = net.forward_train(x)
    assert features.shape == (4, net.feature_dim) and aux.shape == (4, 3)
    loss = torch.nn.functional.cross_entropy(net.head(features), torch.tensor([0, 1, 2, 0])) + 0.4 * aux.sum()
    loss.backward()
    assert all(p.grad is not None for name, p in net.named_parameters() if name.startswith(("cells.0.", "aux_head")))
    net.eval()
    assert net.forward_train(x)[1] is None  # the tower only runs in training
    torch.testing.assert_close(net(x), net(x))  # no drop-path in eval mode


def test_drop_path_drops_whole_samples_and_rescales():
    torch.manual_seed(0)
    out = drop_path(torch.ones(2000, 2, 3, 3), 0.25)
    per_sample = out.flatten(1)
    torch.testing.assert_close(per_sample.unique(), torch.tensor([0.0, 1 / 0.75]))
    assert (per_sample.min(1).values == per_sample.max(1).values).all()  # a sample is dropped whole
    assert abs(float((per_sample[:, 0] == 0).float().mean()) - 0.25) < 0.03


def test_stages_split_at_the_reductions(one_thread):
    net = DartsNetwork(DARTS_V2, channels=4, layers=6).eval()  # reductions at cells 2 and 4
    with torch.no_grad():
        stages = net.forward_intermediates(torch.randn(2, 3, 16, 16), [0, 1, 2])
    assert [tuple(s.shape[1:]) for s in stages] == [(16, 16, 16), (32, 8, 8), (64, 4, 4)]
    assert net.stage_dims == (16, 32, 64) and net.feature_dim == 64


def test_registry_entry_takes_the_genotype_as_data_and_reloads(one_thread):
    genotype = per_cell_genotype()
    kwargs = {"genotype": genotype.to_dict(), "channels": 4, "layers": 5, "num_classes": 3, "auxiliary": True}
    net = create_backbone("darts_net", **kwargs)
    again = create_backbone("darts_net", **kwargs)
    again.load_state_dict(net.state_dict())  # the checkpoint contract: same kwargs, same keys and shapes
    net.reset_head(7)
    assert net.head.out_features == 7 and net.aux_head.classifier.out_features == 7
    net.reset_head(0)
    assert net.aux_head is None and isinstance(net.head, torch.nn.Identity)


def test_genotype_errors_name_the_problem(one_thread):
    with pytest.raises(ConfigError, match="at least 3 cells"):
        DartsNetwork(DARTS_V2, channels=4, layers=2)
    with pytest.raises(ConfigError, match="use --layers 5"):
        DartsNetwork(per_cell_genotype(5), channels=4, layers=8)
    with pytest.raises(ConfigError, match="even"):
        DartsNetwork(DARTS_V2, channels=5, layers=5)
    dangling = CellSpec((Edge("skip_connect", 3, 4), Edge("skip_connect", 0, 2)), (2, 4))
    with pytest.raises(ConfigError, match="reads node 3, which has no incoming edge"):
        DartsNetwork(Genotype(dangling, DARTS_V2.reduce), channels=4, layers=5)
    bad = DARTS_V2.to_dict()
    bad["normal"]["edges"][0]["op"] = "sep_conv_3x4"
    with pytest.raises(ConfigError, match="did you mean 'sep_conv_3x3'"):
        from_dict(bad)
    bad = DARTS_V2.to_dict()
    bad["reduce"]["edges"][0]["source"] = 7
    with pytest.raises(ConfigError, match="does not fit a cell of 4 nodes"):
        create_backbone("darts_net", genotype=bad)
