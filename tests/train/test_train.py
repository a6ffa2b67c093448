import numpy as np
import pytest

from tagmatch.audio.augment import AugmentConfig
from tagmatch.audio.features import FeatureConfig
from tagmatch.model.encoder import ModelConfig
from tagmatch.train.loop import AudioPool, TrainConfig, make_optimizer, make_train_step, train

TINY = ModelConfig(channels=(8, 16, 16), hidden=32, dim=16)


def tiny_config(**kw) -> TrainConfig:
    return TrainConfig(**{"model": TINY, "batch_pairs": 16, "steps": 6, "checkpoint_every": 3,
                          "warmup_steps": 1, **kw})


def melody(seed: int, seconds: float = 20.0, sr: int = 8000) -> np.ndarray:
    """A random sequence of notes with harmonics: enough structure to learn from."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(int(seconds * 4)):
        f0 = 220 * 2 ** (rng.integers(0, 24) / 12)
        t = np.arange(sr // 4) / sr
        note = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in (1, 2, 3)) * np.exp(-3 * t)
        out.append(note)
    return np.concatenate(out).astype(np.float32) * 0.3


@pytest.mark.parametrize("loss", ["ntxent", "pair-bce"])
def test_training_steps_lower_the_loss_on_a_fixed_batch(loss):
    import jax
    from flax import nnx

    from tagmatch.model.encoder import Siamese

    cfg = tiny_config(loss=loss, learning_rate=3e-3)
    pool = AudioPool.from_signals([melody(1), melody(2)])
    rng = np.random.default_rng(0)
    crop = cfg.augment.crop_samples(cfg.features)
    crops, na, nb = (pool.crops(rng, cfg.batch_pairs, crop) for _ in range(3))
    model = Siamese(cfg.features, cfg.model, rngs=nnx.Rngs(0))
    opt = make_optimizer(model, TrainConfig(steps=40, warmup_steps=1, learning_rate=3e-3))
    step = make_train_step(cfg)
    key = jax.random.key(0)
    losses = [float(step(model, opt, crops, na, nb, key)[0]) for _ in range(25)]
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses


def test_train_writes_a_model_and_resumes_from_its_checkpoint(tmp_path):
    from tagmatch.model.modelfile import load_model

    music = [melody(3), melody(4)]
    ck, out = tmp_path / "ck.joblib", tmp_path / "model.joblib"
    seen = []
    first = train(music, out, tiny_config(), checkpoint=ck, progress=lambda p: seen.append(p.done),
                  should_stop=lambda: len(seen) >= 4)
    assert first["steps"] == 4 and ck.exists() and out.exists()
    second = train(music, out, tiny_config(), checkpoint=ck, progress=lambda p: seen.append(p.done))
    assert seen == [1, 2, 3, 4, 5, 6]  # resumed at step 5, not from scratch
    assert second["steps"] == 6
    m = load_model(out)
    emb = m.embed(np.random.default_rng(0).standard_normal((5, 96, 64)).astype(np.float32))
    assert emb.shape == (5, TINY.dim)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    assert m.model_id == second["model_id"]


def test_checkpoint_of_another_configuration_is_refused(tmp_path):
    from tagmatch.errors import TagmatchError

    music = [melody(5)]
    ck = tmp_path / "ck.joblib"
    train(music, tmp_path / "a.joblib", tiny_config(), checkpoint=ck)
    with pytest.raises(TagmatchError, match="another configuration"):
        train(music, tmp_path / "b.joblib", tiny_config(loss="pair-bce"), checkpoint=ck)


def test_augmented_view_keeps_shape_and_is_finite():
    import jax

    from tagmatch.audio.augment import degrade

    feat, aug = FeatureConfig(), AugmentConfig()
    crop = melody(6, 3.0)[: aug.crop_samples(feat)]
    noise = np.random.default_rng(0).standard_normal(len(crop)).astype(np.float32)
    for i in range(4):
        S = np.asarray(degrade(jax.random.key(i), crop, noise, feat, aug, 1.0))
        assert S.shape == (feat.window_frames, feat.n_mels) and np.isfinite(S).all()


def test_fine_tuning_starts_from_the_given_models_weights(tmp_path):
    from tagmatch.errors import TagmatchError
    from tagmatch.model.modelfile import load_model

    music = [melody(6)]
    base = tmp_path / "base.joblib"
    train(music, base, tiny_config(steps=0))  # random weights, seed 0
    tuned = tmp_path / "tuned.joblib"
    train(music, tuned, tiny_config(steps=0, seed=7), init_from=base)  # no step: weights copied as-is
    assert load_model(tuned).model_id == load_model(base).model_id
    train(music, tuned, tiny_config(steps=0, seed=7))
    assert load_model(tuned).model_id != load_model(base).model_id  # the test can fail
    other = TrainConfig(model=ModelConfig(channels=(8, 8, 16), hidden=32, dim=16), steps=0)
    with pytest.raises(TagmatchError, match="cannot be fine-tuned"):
        train(music, tmp_path / "x.joblib", other, init_from=base)


def test_an_output_projection_shrinks_the_vectors_and_renames_the_model(tmp_path):
    from tagmatch.model.modelfile import load_model, set_projection

    path = tmp_path / "m.joblib"
    train([melody(8)], path, tiny_config(steps=0))
    before = load_model(path)
    axes = np.linalg.qr(np.random.default_rng(0).standard_normal((TINY.dim, 6)))[0].astype(np.float32)
    new_id = set_projection(path, axes, ref_hop_frames=25)
    after = load_model(path)
    assert after.model_id == new_id != before.model_id  # a store of the old model is refused
    assert after.dim == 6 and after.feature_config.ref_hop_frames == 25
    x = np.random.default_rng(1).standard_normal((3, 96, 64)).astype(np.float32)
    v = after.embed(x)
    assert v.shape == (3, 6)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    full = before.embed(x) @ axes  # the projection of the encoder's own vectors, re-normalised
    np.testing.assert_allclose(v, full / np.linalg.norm(full, axis=1, keepdims=True), atol=1e-5)


def test_same_source_share_draws_that_part_of_the_batch_from_one_source():
    from tagmatch.train.loop import batch_crops

    # six tracks, each a constant level, so a crop says which track it came from
    pool = AudioPool.from_signals([np.full(4000, 0.01 * (i + 1), np.float32) for i in range(6)])
    sources = np.array(["a", "a", "a", "b", "b", "c"])
    masks = [sources == "a", sources == "b"]  # "c" has one track: no negatives of its own
    cfg = TrainConfig(batch_pairs=16, same_source_share=0.5)
    for seed in range(5):
        crops = batch_crops(pool, np.random.default_rng(seed), cfg, 1000, masks)
        assert crops.shape == (16, 1000)
        track = np.rint(crops[:, 0] / 0.01).astype(int) - 1
        hard = set(sources[track[:8]])
        assert len(hard) == 1 and hard <= {"a", "b"}  # the first half: one source
    uniform = batch_crops(pool, np.random.default_rng(0), TrainConfig(batch_pairs=16), 1000, masks)
    assert uniform.shape == (16, 1000)


@pytest.mark.parametrize("kind", ["window", "shared"])
def test_distillation_pulls_a_smaller_student_towards_its_teacher(tmp_path, kind):
    from tagmatch.errors import TagmatchError
    from tagmatch.audio.features import log_mel, window_starts
    from tagmatch.model.modelfile import load_model

    music = [melody(5), melody(6)]
    teacher = tmp_path / "teacher.joblib"
    train(music, teacher, tiny_config(steps=20, learning_rate=3e-3))
    small = ModelConfig(channels=(4, 8, 8), hidden=16, dim=16, kind=kind)
    cfg = tiny_config(model=small, distill_weight=1.0, learning_rate=3e-3, steps=40)
    train(music, tmp_path / "before.joblib", tiny_config(model=small, steps=0))  # the same initial weights
    train(music, tmp_path / "student.joblib", cfg, teacher=teacher)

    fc = FeatureConfig()
    S = log_mel(melody(5), fc)
    starts = window_starts(len(S), 24, fc)  # on the shared kind's stride grid (8 frames here)
    t = load_model(teacher).embed_at(S, starts)
    agree = {name: float(np.mean(np.sum(load_model(tmp_path / f"{name}.joblib").embed_at(S, starts) * t, axis=1)))
             for name in ("before", "student")}
    assert agree["student"] > agree["before"] + 0.2, agree
    if kind == "shared":  # its reference windows sit on its stride grid
        assert load_model(tmp_path / "student.joblib").feature_config.ref_hop_frames == small.stride
    assert load_model(tmp_path / "student.joblib").meta["teacher"] == load_model(teacher).model_id

    with pytest.raises(TagmatchError, match="dimensions"):
        train(music, tmp_path / "x.joblib", tiny_config(model=ModelConfig(channels=(4, 8, 8), hidden=16, dim=8),
                                                         distill_weight=1.0, steps=1), teacher=teacher)
