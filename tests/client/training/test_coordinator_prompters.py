"""The Coordinator, the prompters, the wire conversion and the request sizing, without a server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.testing import assert_close

from client._exceptions import BlackVIPError
from client.training.coordinator import Coordinator, EncoderLoadError, RandomPooledEncoder, build_encoder
from client.training.objective import RemoteLoss, to_wire
from client.training.prompters import (
    BarProgram,
    CoordinatorPrompt,
    NoPrompt,
    PaddingPrompt,
    PixelSpace,
    Prompter,
)
from shared.protocol import PROTOCOL_VERSION, InfoResponse, TaskLimits

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@pytest.fixture(scope="module")
def space() -> PixelSpace:
    return PixelSpace(CLIP_MEAN, CLIP_STD)


def _pixels(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _run(prompter: Prompter, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return prompter.apply(x, prompter.prepare(x))


def _trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# --------------------------------------------------------------------------- Coordinator


@pytest.mark.parametrize("size", [32, 64, 224])
def test_coordinator_output_shape(size: int) -> None:
    coordinator = Coordinator(RandomPooledEncoder(z_dim=768), size)
    x = _pixels(2, size)
    z = coordinator.features(x)
    assert z.shape == (2, 768)
    prompt = coordinator(z)
    assert prompt.shape == (2, 3, size, size)
    assert bool(torch.isfinite(prompt).all())


def test_coordinator_has_the_seed_parameter_count_at_224() -> None:
    coordinator = Coordinator(RandomPooledEncoder(z_dim=768), 224)
    assert _trainable(coordinator) == 9920
    assert _trainable(coordinator.decoder) == 9920
    assert coordinator.decoder.trigger.numel() == 32 * 7 * 7 - 768  # the 800-value trigger


def test_coordinator_encoder_is_frozen_and_stays_in_eval_mode() -> None:
    coordinator = Coordinator(RandomPooledEncoder(z_dim=64), 64)
    assert _trainable(coordinator.encoder) == 0
    assert not any(p.requires_grad for p in coordinator.encoder.parameters())
    coordinator.train()
    assert coordinator.training and coordinator.decoder.training
    assert not any(m.training for m in coordinator.encoder.modules())
    # a training-mode forward must not move the encoder's BatchNorm statistics
    before = {k: v.clone() for k, v in coordinator.encoder.state_dict().items()}
    coordinator(coordinator.features(_pixels(4, 64)))
    after = coordinator.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    coordinator.eval()
    assert not coordinator.decoder.training


def test_random_pooled_encoder_is_reproducible_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = RandomPooledEncoder(z_dim=32, seed=4)
    assert torch.equal(torch.rand(3), expected_next)
    second = RandomPooledEncoder(z_dim=32, seed=4)
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("size", [48, 100, 225])
def test_coordinator_rejects_sizes_not_a_multiple_of_32(size: int) -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        Coordinator(RandomPooledEncoder(z_dim=64), size)


def test_build_encoder_rejects_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="unknown encoder"):
        build_encoder("resnet")
    assert isinstance(build_encoder("random-pooled"), RandomPooledEncoder)


# --------------------------------------------------------------------------- the MAE path, offline


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
    )
    folder = tmp_path_factory.mktemp("tiny_vit")
    torch.manual_seed(0)
    ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
    return folder


def test_mae_encoder_from_a_local_folder(tiny_vit: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    encoder = build_encoder("mae", tiny_vit)
    assert encoder.z_dim == 32
    coordinator = Coordinator(encoder, 64)
    assert _trainable(coordinator.encoder) == 0
    assert _trainable(coordinator) == _trainable(coordinator.decoder) > 0
    x = _pixels(3, 64)  # larger than the encoder's 32 px: it interpolates
    z = coordinator.features(x)
    assert z.shape == (3, 32)
    assert bool(torch.isfinite(z).all())
    assert coordinator(z).shape == (3, 3, 64, 64)
    # different images give different features (the encoder is really used)
    assert not torch.allclose(z[0], z[1])


def test_mae_encoder_missing_path_says_how_to_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = tmp_path / "no_such_encoder"
    with pytest.raises(EncoderLoadError) as info:
        build_encoder("mae", missing)
    message = str(info.value)
    assert "--encoder-path" in message
    assert "--encoder scratch" in message
    assert str(missing) in message


# --------------------------------------------------------------------------- prompters


@pytest.mark.parametrize("p_eps", [0.0, 1.0, 1000.0])
def test_coordinator_prompt_stays_in_pixel_range(space: PixelSpace, p_eps: float) -> None:
    prompter = CoordinatorPrompt(Coordinator(RandomPooledEncoder(z_dim=64), 32), space, p_eps)
    # make the prompt large so that the clamp matters
    prompter.set_vector(prompter.get_vector() * 50.0)
    x = _pixels(4, 32)
    out = _run(prompter, x)
    assert out.shape == x.shape
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    if p_eps == 1000.0:
        assert float((out - x).abs().max()) > 0.1  # the prompt does something
    if p_eps == 0.0:
        assert_close(out, x, rtol=0, atol=1e-6)  # no prompt: the images come back as they were


def test_coordinator_prompt_with_a_zero_last_layer_is_the_identity(space: PixelSpace) -> None:
    prompter = CoordinatorPrompt(Coordinator(RandomPooledEncoder(z_dim=64), 64), space, 1.0)
    last = prompter.coordinator.decoder.body[-1]
    assert isinstance(last, nn.ConvTranspose2d) and last.out_channels == 3
    with torch.no_grad():
        last.weight.zero_()
    x = _pixels(2, 64)
    out = _run(prompter, x)
    assert_close(out, x, rtol=0.0, atol=1e-6)


def test_padding_prompt_size_and_untouched_centre(space: PixelSpace) -> None:
    prompter = PaddingPrompt(224, space)
    assert _trainable(prompter) == 69840  # 2 * 3 * 30 * 224 + 2 * 3 * 164 * 30
    assert prompter.get_vector().numel() == 69840
    x = _pixels(2, 224)
    out = _run(prompter, x)
    assert out.shape == x.shape
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert_close(out[:, :, 30:194, 30:194], x[:, :, 30:194, 30:194], rtol=0.0, atol=1e-6)
    # the frame is changed (random N(0, 1) in normalised space)
    frame = torch.ones(224, 224, dtype=torch.bool)
    frame[30:194, 30:194] = False
    assert float((out - x)[:, :, frame].abs().mean()) > 0.05


def test_padding_prompt_scales_with_the_image_size(space: PixelSpace) -> None:
    prompter = PaddingPrompt(64, space)  # pad round(30 * 64 / 224) = 9
    assert _trainable(prompter) == 2 * 3 * 9 * 64 + 2 * 3 * 46 * 9


def test_bar_program_layout() -> None:
    program = BarProgram(224)
    assert program.inner == 194 and program.lo == 15  # the seed's PROGRAM: 112 - 194 // 2 = 15
    x = _pixels(2, 194)  # read straight at 194 px, as the seed's INPUT.SIZE [194, 194]
    out = _run(program, x)
    assert out.shape == (2, 3, 224, 224)
    assert torch.equal(out[:, :, 15:209, 15:209], x)  # placed as it is, no resampling
    frame = torch.ones(224, 224, dtype=torch.bool)
    frame[15:209, 15:209] = False
    expected_frame = torch.sigmoid(program.weight.detach())[:, frame]
    for i in range(2):
        assert_close(out[i][:, frame], expected_frame)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    with pytest.raises(ValueError, match="inner size 194"):
        _run(program, _pixels(2, 224))


def test_bar_reads_its_images_at_the_inner_size() -> None:
    from client.training.methods import bar_inner_size, method_input_size

    assert bar_inner_size(224) == 194 and method_input_size("bar", 224) == 194
    assert method_input_size("blackvip", 224) == 224 and method_input_size("vp-spsa", 32) == 32
    assert bar_inner_size(32) == 28


def test_vectors_round_trip_exactly(space: PixelSpace) -> None:
    prompters = [
        CoordinatorPrompt(Coordinator(RandomPooledEncoder(z_dim=64), 32), space, 1.0),
        PaddingPrompt(32, space),
        BarProgram(32),
    ]
    for prompter in prompters:
        vector = prompter.get_vector()
        assert vector.dim() == 1 and vector.numel() == _trainable(prompter)
        new = torch.randn(vector.numel(), generator=torch.Generator().manual_seed(9))
        prompter.set_vector(new)
        assert torch.equal(prompter.get_vector(), new)
        # get_vector is a copy: changing it does not change the prompter
        copy = prompter.get_vector()
        copy += 1.0
        assert torch.equal(prompter.get_vector(), new)


def test_coordinator_prompt_vector_is_the_decoder_only(space: PixelSpace) -> None:
    prompter = CoordinatorPrompt(Coordinator(RandomPooledEncoder(z_dim=768), 224), space, 1.0)
    assert prompter.get_vector().numel() == 9920


def test_no_prompt_is_empty_and_the_identity() -> None:
    prompter = NoPrompt()
    assert prompter.get_vector().numel() == 0
    prompter.set_vector(torch.zeros(0))
    x = _pixels(2, 32)
    assert torch.equal(_run(prompter, x), x)


def test_pixel_space_round_trip(space: PixelSpace) -> None:
    x = _pixels(2, 16)
    assert_close(space.to_pixels(space.normalise(x)), x, rtol=0.0, atol=1e-6)
    assert_close(space.normalise(torch.zeros(1, 3, 1, 1)), space.low)
    assert_close(space.normalise(torch.ones(1, 3, 1, 1)), space.high)


# --------------------------------------------------------------------------- the wire


def test_to_wire_dtypes() -> None:
    x = torch.tensor([0.0, 0.001, 0.5, 0.50196, 1.0, 0.2]).view(1, 3, 1, 2)
    f32 = to_wire(x, "float32")
    assert f32.dtype == np.float32 and f32.shape == (1, 3, 1, 2)
    assert np.array_equal(f32, x.numpy())
    f16 = to_wire(x, "float16")
    assert f16.dtype == np.float16
    assert np.allclose(f16.astype(np.float32), x.numpy(), atol=1e-3)
    u8 = to_wire(x, "uint8")
    assert u8.dtype == np.uint8
    expected = np.array([round(v * 255) for v in [0.0, 0.001, 0.5, 0.50196, 1.0, 0.2]], dtype=np.uint8)
    assert np.array_equal(u8.reshape(-1), expected)
    assert u8.reshape(-1).tolist() == [0, 0, 128, 128, 255, 51]


def _info(max_batch_images: int, max_request_bytes: int, image_size: int = 224) -> InfoResponse:
    return InfoResponse(
        protocol_version=PROTOCOL_VERSION,
        model="ViT-B-32",
        pretrained="random-init",
        image_size=image_size,
        mean=CLIP_MEAN,
        std=CLIP_STD,
        accepted_dtypes=["float32", "float16", "uint8"],
        output_dtype="float32",
        losses=["ce", "focal"],
        max_batch_images=max_batch_images,
        max_request_bytes=max_request_bytes,
        price_per_1k_images=0.0,
        quota_images=None,
        auth_required=False,
        task_limits=TaskLimits(
            max_task_bytes=2**20,
            max_classes=1000,
            max_templates=100,
            max_class_name_chars=200,
            max_template_chars=300,
            max_texts=100_000,
            max_tasks_per_key=1000,
        ),
        idempotency_window_s=86400.0,
        replay_ttl_s=900.0,
    )


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        ("float32", 16),  # (10_000_000 - overhead) // 602_121 bytes per image: the byte limit
        ("float16", 33),  # // 301_065
        ("uint8", 64),  # 66 fit by bytes: the image limit
    ],
)
def test_images_per_request_is_the_tighter_limit(dtype: str, expected: int) -> None:
    info = _info(max_batch_images=64, max_request_bytes=10_000_000)
    loss = RemoteLoss(None, info, "task", wire_dtype=dtype)  # type: ignore[arg-type]
    assert loss.images_per_request == expected
    per_image = 3 * 224 * 224 * np.dtype(dtype).itemsize
    assert loss.images_per_request * per_image < info.max_request_bytes


def test_in_flight_requests_hold_at_most_one_candidate_whatever_the_limit() -> None:
    info = _info(max_batch_images=64, max_request_bytes=10_000_000)
    sequential = RemoteLoss(None, info, "task", wire_dtype="uint8")  # type: ignore[arg-type]
    assert [sequential.request_images(batch) for batch in (12, 128)] == [64, 64]
    piped = RemoteLoss(None, info, "task", wire_dtype="uint8", in_flight=2)  # type: ignore[arg-type]
    try:
        assert [piped.request_images(batch) for batch in (12, 128)] == [12, 64]
    finally:
        piped.close()


def test_a_server_that_takes_not_even_one_image_is_an_error_before_any_query() -> None:
    info = _info(max_batch_images=64, max_request_bytes=200_000)  # less than one float32 image at 224 px
    with pytest.raises(BlackVIPError, match=r"max_request_bytes 200,000: send --wire-dtype uint8, or"):
        RemoteLoss(None, info, "task", wire_dtype="float32")  # type: ignore[arg-type]
    assert RemoteLoss(None, info, "task", wire_dtype="uint8").images_per_request == 1  # type: ignore[arg-type]
    tiny = _info(max_batch_images=64, max_request_bytes=5_000)  # not even one uint8 image
    with pytest.raises(BlackVIPError, match="ask for a larger --max-request-bytes"):
        RemoteLoss(None, tiny, "task", wire_dtype="uint8")  # type: ignore[arg-type]


@pytest.mark.parametrize("make", ["coordinator", "padding", "bar"])
def test_apply_vector_equals_set_vector_then_apply_and_leaves_the_prompter_alone(
    space: PixelSpace, make: str
) -> None:
    prompter: Prompter = {
        "coordinator": lambda: CoordinatorPrompt(Coordinator(RandomPooledEncoder(z_dim=64), 32), space, 1.0),
        "padding": lambda: PaddingPrompt(32, space),
        "bar": lambda: BarProgram(32),
    }[make]()
    x = _pixels(3, 28 if make == "bar" else 32)  # BAR reads images at its inner size
    before = prompter.get_vector()
    candidate = before + torch.randn(before.numel(), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        prepared = prompter.prepare(x)
        applied = prompter.apply_vector(candidate, x, prepared)
    assert torch.equal(prompter.get_vector(), before)  # the candidate never entered the module
    prompter.set_vector(candidate)
    assert torch.equal(applied, _run(prompter, x))  # bit for bit what the old mutate-then-apply gave
    with pytest.raises(ValueError, match="trainable parameters"):
        prompter.apply_vector(candidate[:-1], x, prepared)
