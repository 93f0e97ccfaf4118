"""The seed's Coordinator encoders (trainers/visual_prompters.py), offline: tiny local weights for the
loading paths, full-size architectures built without weights for the parameter counts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from client.training.coordinator import (
    Coordinator,
    EncoderLoadError,
    HFViTEncoder,
    RandomPooledEncoder,
    SeedScratchEncoder,
    build_encoder,
)
from client.training.encoders import HFResNetEncoder


def _count(module: nn.Module, trainable: bool | None = None) -> int:
    return sum(p.numel() for p in module.parameters() if trainable is None or p.requires_grad == trainable)


def _pixels(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# The seed's DecoderManual for 'vit-mae-base'/'vit-base' with a 32-channel cube, layer by layer:
# ConvT(32,64,g32)+b, 1x1(64,64), BN64, ConvT(64,64,g64)+b, 1x1(64,32), BN32, ConvT(32,32,g32)+b,
# 1x1(32,32), BN32, ConvT(32,32,g32)+b, 1x1(32,16), BN16, ConvT(16,3) no bias.
SEED_DECODER_BODY = 320 + 4096 + 128 + 320 + 2048 + 64 + 160 + 1024 + 64 + 160 + 512 + 32 + 192  # 9,120
# The seed's EncoderManual(32): [conv3x3+b, conv2x2, BN] x 5 with 3-32-32 / 32-32-64 / 64-64-64 /
# 64-64-128 / 128-128-32 channels.
SEED_SCRATCH_ENCODER = (
    (896 + 4096 + 64)
    + (9248 + 8192 + 128)
    + (36928 + 16384 + 128)
    + (36928 + 32768 + 256)
    + (147584 + 16384 + 64)
)


def test_seed_scratch_coordinator_matches_the_seed() -> None:
    coordinator = Coordinator(SeedScratchEncoder(seed=1), 224)
    assert SEED_DECODER_BODY == 9120 and SEED_SCRATCH_ENCODER == 310048
    assert _count(coordinator.decoder, trainable=True) == SEED_DECODER_BODY  # no trigger
    assert not hasattr(coordinator.decoder, "trigger")
    assert _count(coordinator.encoder) == SEED_SCRATCH_ENCODER and _count(coordinator.encoder, True) == 0
    z = coordinator.features(_pixels(2, 224))
    assert z.shape == (2, 32, 7, 7)  # a map, not a pooled vector
    assert coordinator(z).shape == (2, 3, 224, 224)


def test_seed_scratch_encoder_normalises_with_batch_statistics_even_in_eval() -> None:
    coordinator = Coordinator(SeedScratchEncoder(seed=1), 64)
    coordinator.eval()
    assert not coordinator.decoder.training
    assert all(m.training for m in coordinator.encoder.modules())  # never switched, as in the seed
    x = _pixels(4, 64)
    alone = coordinator.features(x[:2])
    together = coordinator.features(x)[:2]
    assert not torch.allclose(alone, together)  # batch statistics: the other images matter


def test_random_pooled_is_todays_toy_encoder_with_the_trigger() -> None:
    coordinator = Coordinator(RandomPooledEncoder(seed=0), 224)
    assert _count(coordinator, trainable=True) == 9920  # 9,120 + the 800-value trigger
    assert coordinator.features(_pixels(2, 224)).shape == (2, 768)


# --------------------------------------------------------------------------- pretrained, full size


def test_mae_and_supervised_vit_b16_have_the_seeds_size() -> None:
    from transformers import ViTConfig, ViTMAEConfig, ViTModel

    mae_config = ViTMAEConfig()  # facebook/vit-mae-base's architecture: ViT-B/16 at 224
    assert (mae_config.hidden_size, mae_config.num_hidden_layers, mae_config.patch_size) == (768, 12, 16)
    mae = HFViTEncoder(ViTModel(ViTConfig(**mae_config.to_dict()), add_pooling_layer=False), False)
    assert _count(mae) == 85_798_656  # the seed: "SSL-MAE VIT-B (n param: 86M)"
    coordinator = Coordinator(mae, 224)
    assert _count(coordinator, trainable=True) == SEED_DECODER_BODY + 800 == 9920
    supervised = HFViTEncoder(ViTModel(ViTConfig()), True)  # with the pooler, as ViTModel.from_pretrained
    assert _count(supervised) == 85_798_656 + 768 * 768 + 768


def test_dino_resnet50_has_the_seeds_size_and_decoder() -> None:
    import torchvision
    from transformers import ResNetConfig, ResNetModel

    reference = torchvision.models.resnet50(weights=None)
    without_head = _count(reference) - _count(reference.fc)
    encoder = HFResNetEncoder(ResNetModel(ResNetConfig()))  # ResNet-50 (Ramos-Ramos/dino-resnet-50)
    assert _count(encoder) == without_head == 23_508_032  # the seed: "SSL-DINO RN50 (n param: 23M)"
    assert encoder.z_dim == 2048
    coordinator = Coordinator(encoder, 224)
    # 64 x 7 x 7 cube: the first ConvT is (64 -> 64, groups 32): 64 * 2 * 4 + 64 = 576 instead of 320
    assert coordinator.decoder.trigger.numel() == 3136 - 2048
    assert coordinator.decoder.body[0].groups == 32
    assert _count(coordinator, trainable=True) == SEED_DECODER_BODY - 320 + 576 + 1088


# --------------------------------------------------------------------------- loading tiny local weights


@pytest.fixture(scope="module")
def tiny_mae(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    config = ViTMAEConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
        patch_size=8, decoder_hidden_size=16, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
        decoder_intermediate_size=32,
    )  # fmt: skip
    torch.manual_seed(0)
    model = ViTMAEForPreTraining(config)  # the hub checkpoint's class: "vit." prefix plus a decoder
    folder = tmp_path_factory.mktemp("tiny_mae")
    model.save_pretrained(folder)
    return folder, {k: v.clone() for k, v in model.vit.state_dict().items()}


def test_mae_loads_a_pretraining_checkpoint_and_takes_the_cls_before_layernorm(tiny_mae, monkeypatch) -> None:
    folder, saved = tiny_mae
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    encoder = build_encoder("mae", folder)
    assert isinstance(encoder, HFViTEncoder) and encoder.z_dim == 32
    loaded = encoder.model.state_dict()
    assert set(loaded) == set(saved)  # every MAE encoder weight, and nothing left random
    assert all(torch.equal(loaded[key], saved[key]) for key in saved)
    x = _pixels(3, 32)
    out = encoder.model(pixel_values=x, output_hidden_states=True)
    z = encoder(x)
    assert torch.equal(z, out.hidden_states[-1][:, 0])  # the seed's hidden_states[-1][:, 0, :]
    assert not torch.allclose(z, out.last_hidden_state[:, 0])  # not the LayerNorm'd one


def test_supervised_vit_takes_the_cls_after_layernorm(tmp_path: Path, monkeypatch) -> None:
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=8)  # fmt: skip
    ViTModel(config).save_pretrained(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    encoder = build_encoder("vit-sup", tmp_path)
    x = _pixels(2, 32)
    assert torch.equal(encoder(x), encoder.model(pixel_values=x).last_hidden_state[:, 0])


def test_dino_loads_a_local_resnet(tmp_path: Path, monkeypatch) -> None:
    from transformers import ResNetConfig, ResNetModel

    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1])
    ResNetModel(config).save_pretrained(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    encoder = build_encoder("dino-rn50", tmp_path)
    coordinator = Coordinator(encoder, 224)
    z = coordinator.features(_pixels(2, 224))
    assert z.shape == (2, 64)
    assert coordinator(z).shape == (2, 3, 224, 224)


@pytest.mark.parametrize("kind", ["mae", "vit-sup", "dino-rn50"])
def test_a_missing_encoder_names_the_flag_and_the_offline_choice(tmp_path: Path, kind: str) -> None:
    missing = tmp_path / "no_such_encoder"
    with pytest.raises(EncoderLoadError) as info:
        build_encoder(kind, missing)
    message = str(info.value)
    assert "--encoder-path" in message and "--encoder scratch" in message and str(missing) in message


def test_a_pretrained_encoder_needs_the_seeds_cube() -> None:
    encoder = RandomPooledEncoder(z_dim=8)
    assert Coordinator(encoder, 32).decoder.channels == 808  # toy: the cube grows to fit
    with pytest.raises(ValueError, match="7 x 7"):
        from transformers import ViTConfig, ViTModel

        tiny = ViTModel(ViTConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=64, image_size=32, patch_size=8))  # fmt: skip
        Coordinator(HFViTEncoder(tiny, False), 32)  # 64 values do not fit 32 x 1 x 1


def test_every_configurable_encoder_can_be_built_by_name() -> None:
    import typing

    from client.training.config import ENCODERS, TrainConfig
    from client.training.encoders import ENCODER_KINDS

    assert (
        set(ENCODERS)
        == set(ENCODER_KINDS)
        == set(typing.get_args(TrainConfig.model_fields["encoder"].annotation))
    )
