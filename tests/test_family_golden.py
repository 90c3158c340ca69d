"""Every family beside wav2vec 2.0 (HuBERT and ContentVec, data2vec-audio, UniSpeech and UniSpeech-SAT, WavLM,
Wav2Vec2-Conformer, w2v-BERT 2.0), and the x-vector heads, against their recordings from transformers
(golden/record_hubert.py, record_data2vec_audio.py, record_xvector.py, record_unispeech.py, record_wavlm.py,
record_conformer.py, record_w2v_bert.py): every stage on both paths, each item of a padded batch against the item
alone, the frame mask. What differs from wav2vec 2.0 in each family is tested in its own file (test_hubert.py,
test_data2vec_audio.py, test_xvector.py, test_unispeech.py, test_wavlm.py, test_conformer.py, test_w2v_bert.py)."""
import numpy as np
import pytest

from golden import (CONFORMER, DATA2VEC_AUDIO, HUBERT, UNISPEECH, W2V_BERT, WAVLM, XVECTOR, batch_vs_alone_errors,
                    case_errors, cases, model, recorded_case, tolerance)

ALL = (HUBERT + ["hubert_base"] + DATA2VEC_AUDIO + ["data2vec_audio_base"] + XVECTOR + UNISPEECH + ["unispeech_sat_base"]
       + WAVLM + ["wavlm_base_plus"] + CONFORMER + ["conformer_rel_pos_large"] + W2V_BERT + ["w2v_bert_2_0"])
GOLDEN_CASES = [(name, case) for name in ALL for case in cases(name)]


@pytest.mark.parametrize("reference", [False, True], ids=["fast", "reference"])
@pytest.mark.parametrize("name,case", GOLDEN_CASES, ids=[f"{n}-{c}" for n, c in GOLDEN_CASES])
def test_every_recorded_stage_matches_transformers(name, case, reference):
    errors = case_errors(name, case, reference=reference)
    assert len(errors) >= 2, "no stage compared"
    worst = max(errors, key=errors.get)
    assert errors[worst] <= tolerance(name), f"{worst}: error {errors[worst]:.2e}"


@pytest.mark.parametrize("path", ["fast-as-one-batch", "fast-default", "reference"])
@pytest.mark.parametrize("name", ALL)
def test_padded_batch_item_equals_the_item_alone(name, path):
    items_alone = None if path == "fast-default" else False
    errors = batch_vs_alone_errors(name, items_alone=items_alone, reference=path == "reference")
    worst = max(errors, key=errors.get)
    assert errors[worst] <= tolerance(name), f"item {worst}: error {errors[worst]:.2e}"


@pytest.mark.parametrize("name", ALL)
def test_frame_mask_matches_transformers(name):
    ref = recorded_case(name, "batch")
    out = model(name)(ref["input_values"], ref["attention_mask"])
    np.testing.assert_array_equal(out.encoder_frame_mask, ref["frame_mask"])
    if "output_frame_mask" in ref:  # after a down-sampling adapter (w2v-BERT's)
        np.testing.assert_array_equal(out.frame_mask, ref["output_frame_mask"])
