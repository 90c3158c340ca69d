"""npw2v2 explain --html: the page is parsed, and the facts its figures carry are checked against
lengths worked out here, the model's own transcripts and the traces themselves. No browser."""
import json
import re
import struct
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

import npw2v2
from golden import GOLDEN, model
from npw2v2.app.cli import DEFAULT_MODEL, EXAMPLES, main
from npw2v2.app.explain import Against, Trace
from npw2v2.app.explain_page import Batch, head_weights
from npw2v2.app.svg import colour, png
from npw2v2.core.layers import attention_weights
from npw2v2.core.transformer import attention_input
from npw2v2.core.ops import REFERENCE
from npw2v2.core import wavlm

DOCS = Path(__file__).resolve().parents[1] / "docs"
FIGURES = ["waveforms", "ladder", "mask", "sizes", "attention", "ctc", "promise"]
BASE_KERNELS, BASE_STRIDES = (10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2)


class Element:
    def __init__(self, tag, attrs, figure):
        self.tag, self.attrs, self.figure = tag, dict(attrs), figure

    def __getitem__(self, name):
        return self.attrs[name]

    def int(self, name) -> int:
        return int(self.attrs[name])


class Page(HTMLParser):
    """Every element of the page with its attributes and the figure it is in."""

    VOID = {"meta", "br", "img", "input", "link"}

    def __init__(self, text: str):
        super().__init__()
        self.elements, self.open, self.text = [], [], text
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        figure = dict(attrs).get("data-figure") or next((e.figure for e in reversed(self.open) if e.figure), None)
        element = Element(tag, attrs, figure)
        self.elements.append(element)
        if tag not in self.VOID:
            self.open.append(element)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID:
            self.open.pop()

    def handle_endtag(self, tag):
        assert self.open and self.open[-1].tag == tag, f"</{tag}> closes <{self.open[-1].tag if self.open else None}>"
        self.open.pop()

    def find(self, figure=None, tag=None, **attrs):
        """The elements of a figure with the given tag and attribute values (data_item=0 for data-item="0")."""
        wanted = {k.rstrip("_").replace("_", "-"): str(v) for k, v in attrs.items()}
        return [e for e in self.elements if (figure is None or e.figure == figure) and (tag is None or e.tag == tag)
                and all(e.attrs.get(k) == v or (v == "*" and k in e.attrs) for k, v in wanted.items())]


def conv_lengths(samples: int) -> list[int]:
    lengths = []
    for k, s in zip(BASE_KERNELS, BASE_STRIDES):
        samples = (samples - k) // s + 1
        lengths.append(samples)
    return lengths


@pytest.fixture(scope="module")
def base_page(tmp_path_factory):
    path = tmp_path_factory.mktemp("page") / "page.html"
    assert main(["explain", "--seconds", "1.3", "2.7", "--html", str(path), "--quiet"]) == 0
    text = path.read_text(encoding="utf-8")
    return Page(text)


@pytest.fixture(scope="module")
def digits_page(tmp_path_factory):
    path = tmp_path_factory.mktemp("page") / "digits.html"
    clips = sorted(EXAMPLES.glob("*.flac"))
    texts = [clip.name.split(".")[0].replace("-", " ") for clip in clips]  # each clip is named after what it says
    assert main(["explain", "-m", str(DEFAULT_MODEL), *map(str, clips), "--text", *texts, "--html", str(path),
                 "--quiet"]) == 0
    return Page(path.read_text(encoding="utf-8")), clips


def test_every_figure_is_there_in_the_order_the_batch_travels(base_page):
    assert [e["data-figure"] for e in base_page.find(tag="figure")] == FIGURES
    assert base_page.text.startswith("<!DOCTYPE html>")


def test_the_page_names_no_address_and_embeds_only_data(base_page, digits_page):
    for page in (base_page, digits_page[0]):
        assert not re.search(r"(?i)(https?|ftp|file):|//[a-z0-9-]+\.[a-z]", page.text)
        links = [v for e in page.elements for k, v in e.attrs.items() if k in ("href", "src")]
        ids = {"#" + e["id"] for e in page.elements if "id" in e.attrs}
        assert links and all(v.startswith("data:image/png;base64,") or v in ids for v in links)
        assert len([v for v in links if v in ids]) == len(FIGURES)  # the contents
        assert not page.find(tag="script") and not page.find(tag="link")
        assert len(page.text.encode()) < 1_000_000


def test_waveforms_show_each_items_samples_and_its_padding(base_page):
    lengths = [round(1.3 * 16000), round(2.7 * 16000)]
    for i, n in enumerate(lengths):
        (item,) = base_page.find("waveforms", "g", data_item=i, class_="item")
        assert (item.int("data-samples"), item.int("data-padded-samples")) == (n, max(lengths))
        (valid,) = base_page.find("waveforms", "rect", class_="valid", data_unit="samples",
                                  data_from=0, data_to=n)
        (padding,) = base_page.find("waveforms", "rect", class_="padding", data_from=n, data_to=max(lengths))
        shaded = 0 if n == max(lengths) else pytest.approx(780 * (1 - n / max(lengths)), 0.01)  # of 780 pixels
        assert float(padding["width"]) == shaded


def test_the_ladder_gives_every_layers_frames(base_page):
    for i, seconds in enumerate((1.3, 2.7)):
        expected = conv_lengths(round(seconds * 16000))
        bars = sorted(base_page.find("ladder", "rect", class_="bar", data_item=i), key=lambda e: e.int("data-layer"))
        assert [b.int("data-frames") for b in bars] == expected
    (zoom,) = base_page.find("ladder", "svg", class_="zoom")
    assert (zoom.int("data-receptive-field"), zoom.int("data-hop")) == (400, 320)
    assert [e.int("data-first-sample") for e in base_page.find("ladder", "rect", class_="field")] == [0, 320, 640]


def test_the_mask_figure_shows_each_place_the_mask_acts(base_page):
    padded = conv_lengths(round(2.7 * 16000))
    for i, seconds in enumerate((1.3, 2.7)):
        layers = conv_lengths(round(seconds * 16000))
        frames = layers[-1]
        (item,) = base_page.find("mask", "g", data_item=i, class_="item")
        assert (item.int("data-valid-frames"), item.int("data-frames")) == (frames, padded[-1])
        base_page.find("mask", "rect", class_="valid", data_unit="frames", data_from=0, data_to=frames)[0]
        (norm,) = base_page.find("mask", "rect", class_="norm", data_item=i)
        assert (norm.int("data-norm-frames"), norm.int("data-layer-frames")) == (layers[0], padded[0])
        (zeroed,) = base_page.find("mask", "path", class_="sizes", data_item=i)
        assert zeroed.int("data-zero-frames") == padded[-1] - frames  # read off the traced array
        (blocked,) = base_page.find("mask", "rect", class_="blocked", data_item=i)
        assert (blocked.int("data-from"), blocked.int("data-to")) == (frames, padded[-1])


def test_heat_maps_and_attention_cover_each_items_frames(base_page):
    for i, seconds in enumerate((1.3, 2.7)):
        frames, padded = conv_lengths(round(seconds * 16000))[-1], conv_lengths(round(2.7 * 16000))[-1]
        (heat,) = base_page.find("sizes", "image", data_item=i)
        assert (heat.int("data-layers"), heat.int("data-valid-frames"), heat.int("data-frames")) == (13, frames, padded)
        (attention,) = base_page.find("attention", "g", data_item=i)
        assert attention.int("data-valid-keys") == frames
        assert attention.int("data-zero-key-columns") == padded - frames  # computed from the weights
    (figure,) = base_page.find(tag="figure", data_figure="attention")
    assert (figure.int("data-layer"), figure.int("data-head")) == (11, 0)


def test_the_promise_figure_shows_the_masked_batch_exact_and_group_norm_over_padding_not(base_page):
    dots = base_page.find("promise", "circle")
    series = sorted({d["data-series"] for d in dots})
    assert len(series) == 2 and series[0].startswith("npw2v2") and series[1].startswith("transformers")
    stages = {d["data-stage"] for d in dots}
    assert {"conv_layers.0", "projected", "hidden_states.12", "last_hidden_state"} <= stages
    assert len(dots) == 2 * 2 * len(stages)

    def difference(label, stage, item):
        (dot,) = [d for d in dots
                  if d["data-series"] == label and d["data-stage"] == stage and d.int("data-item") == item]
        return float(dot["data-difference"])

    assert max(difference(series[0], s, i) for s in stages for i in (0, 1)) < 1e-4
    assert difference(series[1], "conv_layers.0", 0) > 1e-2  # group norm saw item 0's padding
    assert difference(series[1], "last_hidden_state", 1) == 0  # item 1 is the longest: no padding to see
    assert base_page.find("ctc", "figure", data_absent="no CTC head")


def test_group_norm_over_the_padding_is_drawn_over_every_frame(tmp_path):
    path = tmp_path / "page.html"
    assert main(["explain", "--samples", "4000", "8000", "--norm-over-padding", "--html", str(path), "--quiet"]) == 0
    page = Page(path.read_text(encoding="utf-8"))
    (norm,) = page.find("mask", "rect", class_="norm", data_item=0)
    assert norm.int("data-norm-frames") == norm.int("data-layer-frames") == conv_lengths(8000)[0]
    # the traced run is now transformers' way; the figure still shows both, npw2v2's first
    worst = {}
    for dot in page.find("promise", "circle", data_item=0):
        worst[dot["data-series"]] = max(worst.get(dot["data-series"], 0), float(dot["data-difference"]))
    (ours, theirs) = sorted(worst)
    assert ours.startswith("npw2v2") and worst[ours] < 1e-4 < 1e-2 < worst[theirs]


def test_the_bundled_model_page_spells_its_examples(digits_page):
    page, clips = digits_page
    for i, clip in enumerate(clips):
        spoken = clip.name.split(".")[0].replace("-", " ").upper()
        (item,) = page.find("ctc", "g", data_item=i, class_="item")
        assert item["data-text"] == spoken
        words = page.find("ctc", "g", class_="word", data_item=i)
        assert [w["data-word"] for w in words] == spoken.split()
        ends = [(float(w["data-start"]), float(w["data-end"])) for w in words]
        assert all(a < b for a, b in ends) and all(b1 <= a2 for (_, b1), (a2, _) in zip(ends, ends[1:]))
    (figure,) = page.find(tag="figure", data_figure="attention")
    assert figure.int("data-layer") == 2  # the last of the bundled model's 3 layers
    assert len(page.find("promise", "circle", data_stage="logits")) == len(clips)


@pytest.mark.parametrize("name", ["tiny_adapter", "tiny_classifier", "tiny_pretraining", "tiny_frame_classifier",
                                  "tiny_mms", "tiny_odd_pos", "tiny_stable", "tiny_ctc", "tiny_wavlm"])
def test_every_head_and_layout_gets_a_whole_page(tmp_path, name):
    path = tmp_path / "page.html"
    assert main(["explain", "-m", str(GOLDEN / name), "--samples", "16000", "8000", "--html", str(path),
                 "--quiet"]) == 0
    page = Page(path.read_text(encoding="utf-8"))
    assert [e["data-figure"] for e in page.find(tag="figure")] == FIGURES
    cfg = json.loads((GOLDEN / name / "config.json").read_text())
    frames = [conv_lengths(n)[-1] for n in (16000, 8000)]
    assert [page.find("mask", "g", class_="item", data_item=i)[0].int("data-valid-frames") for i in (0, 1)] == frames
    spelled = page.find("ctc", "g", class_="item")
    assert bool(spelled) == ("Wav2Vec2ForCTC" in cfg["architectures"])
    for _ in range(cfg.get("num_adapter_layers", 3) if cfg.get("add_adapter") else 0):  # the adapter's frames
        k, s = cfg.get("adapter_kernel_size", 3), cfg.get("adapter_stride", 2)
        frames = [(t + 2 - k) // s + 1 for t in frames]
    assert [e.int("data-valid-frames") for e in spelled] == (frames if spelled else [])


def test_many_items_stay_within_the_page_width(tmp_path):
    path = tmp_path / "page.html"
    lengths = [4000 + 1000 * i for i in range(9)]
    assert main(["explain", "-m", str(DEFAULT_MODEL), "--samples", *map(str, lengths), "--html", str(path),
                 "--quiet"]) == 0
    page = Page(path.read_text(encoding="utf-8"))
    images = page.find("attention", "image", class_="heat")
    assert len(images) == 9
    assert all(float(e["x"]) >= 150 and float(e["x"]) + float(e["width"]) <= 950 for e in images)
    assert min(float(e["width"]) for e in images) >= 100


def facts(page: Page) -> list:
    """Every element's data- attributes, but the differences (float32 sums may round apart on another CPU)."""
    return [(e.figure, e.tag, sorted((k, v) for k, v in e.attrs.items()
                                     if k.startswith("data-") and k != "data-difference"))
            for e in page.elements if any(k.startswith("data-") for k in e.attrs)]


def test_the_example_page_in_the_docs_is_what_the_command_makes_today(digits_page):
    """docs/explain/digits.html, made by the command docs/padding-and-masks.md names, is not stale."""
    committed = Page((DOCS / "explain" / "digits.html").read_text(encoding="utf-8"))
    assert facts(committed) == facts(digits_page[0])
    command = ('npw2v2/bundled/examples/*.flac --text "eight" "nine one" "seven six three one" '
               '"zero eight three seven" --html docs/explain/digits.html')
    assert command in (DOCS / "padding-and-masks.md").read_text()


def test_text_draws_the_forced_alignment_npw2v2_align_gives(tmp_path):
    path = tmp_path / "page.html"
    clips = sorted(EXAMPLES.glob("*.flac"))
    truth = [clip.name.split(".")[0].replace("-", " ") for clip in clips]
    texts = truth[:-1] + [truth[-1].rsplit(" ", 1)[0] + " one"]  # the last clip says SEVEN, not ONE, at its end
    assert main(["explain", "-m", str(DEFAULT_MODEL), *map(str, clips), "--html", str(path), "--text", *texts,
                 "--quiet"]) == 0
    page = Page(path.read_text(encoding="utf-8"))
    aligned = npw2v2.load(DEFAULT_MODEL).align(list(map(str, clips)), texts)
    for i, result in enumerate(aligned):
        words = page.find("ctc", "g", class_="aligned", data_item=i)
        assert [(w["data-word"], float(w["data-start"]), float(w["data-end"])) for w in words] == \
            [(s.text, round(s.start, 3), round(s.end, 3)) for s in result.words]
        scores = [float(w["data-score"]) for w in words]
        greedy = page.find("ctc", "g", class_="word", data_item=i)
        if i < len(clips) - 1:
            assert min(scores) > 0.5
            assert all(abs(float(a["data-start"]) - float(g["data-start"])) <= 0.02 for a, g in zip(words, greedy))
        else:
            # the word the audio does not say scores far below those it says (0.51 against 0.99 and more)
            assert scores[-1] < 0.6 and min(scores[:-1]) > 0.9


@pytest.mark.parametrize("args, message", [
    (["--text", "one"], "--html"),
    (["-m", "DIGITS", "--html", "PAGE", "--text", "one"], "1 transcript(s) for 2 input(s)"),
    (["-m", "DIGITS", "--samples", "8000", "--html", "PAGE", "--text", "one", "two"], "2 transcript(s) for 1 input(s)"),
    (["--samples", "8000", "--html", "PAGE", "--text", "one"], "needs a CTC model with a vocabulary"),
    (["-m", "DIGITS", "--samples", "8000", "--html", "PAGE", "--text", "one 2"], "--text of item 0"),
    (["-m", "DIGITS", "--samples", "800", "--html", "PAGE", "--text", "seven seven seven"], "--text of item 0"),
])
def test_text_is_one_spellable_transcript_per_input(tmp_path, capsys, args, message):
    args = [str(tmp_path / "p.html") if a == "PAGE" else str(DEFAULT_MODEL) if a == "DIGITS" else a for a in args]
    assert main(["explain", *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "p.html").exists()


def test_head_weights_are_that_heads_slice_of_the_attention_the_layer_computes():
    for name in ("tiny_base", "tiny_stable", "tiny_wavlm", "tiny_wavlm_stable"):  # post-LN and pre-LN
        m = model(GOLDEN / name)
        x = np.random.RandomState(0).standard_normal((2, 3000)).astype(np.float32)
        mask = np.ones(x.shape, bool)
        mask[0, 1700:] = False
        trace = Trace()
        m(x * mask, attention_mask=mask, trace=trace)
        b = Batch.of(trace, m)
        layer = m.config.num_hidden_layers - 1
        p = m.params["encoder"]["layers"][layer]
        h = attention_input(trace[f"hidden_states.{layer}"].array, p, m.config, REFERENCE)
        bias = None
        if m.config.model_type == "wavlm":  # the layer's gated relative position bias, every head's
            embed = m.params["encoder"]["layers"][0]["attention"]["rel_attn_embed"]["weight"]
            table = wavlm.relative_table(h.shape[1], embed, m.config)
            bias = wavlm.gated_bias(h, p["attention"], table, m.config.num_attention_heads)
        every = attention_weights(h, trace["frame_mask"].array, p["attention"], m.config.num_attention_heads, bias)
        for head in range(m.config.num_attention_heads):
            one = head_weights(b, layer, head)
            np.testing.assert_allclose(one, every[:, head], rtol=1e-5, atol=1e-7)
            n = int(b.frames[0])
            assert (one[0, :, n:] == 0).all() and np.allclose(one[0, :n].sum(axis=1), 1)


def test_a_lone_run_is_compared_on_the_real_frames_only():
    batched = Trace()
    x = np.arange(24, dtype=np.float32).reshape(2, 4, 3)  # [B, T, C]
    batched("projected", x)
    batched("frame_mask", np.ones((2, 4), bool))

    alone = [x[:1, :2].copy(), x[1:].copy()]  # item 0 alone has 2 real frames, item 1 all 4

    def found():
        numbers = [{}]
        for i, lone in enumerate(alone):
            Against([batched], i, 2, numbers)("projected", lone)
            Against([batched], i, 2, numbers)("frame_mask", np.ones(lone.shape[:2], bool))
        return numbers[0]

    assert found() == {"projected": [0.0, 0.0]}
    x[0, 3] += 5  # a padded frame: not compared
    x[1, 3, 2] += 0.5  # a real one: reported
    assert found() == {"projected": [0.0, 0.5]}


def test_png_holds_the_pixels_it_was_given():
    rgb = np.random.RandomState(1).randint(0, 256, (5, 7, 3)).astype(np.uint8)
    data = png(rgb)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    start = data.index(b"IDAT") + 4
    length = struct.unpack(">I", data[start - 8:start - 4])[0]
    rows = np.frombuffer(zlib.decompress(data[start:start + length]), np.uint8).reshape(height, 1 + 3 * width)
    assert (width, height) == (7, 5) and (rows[:, 0] == 0).all()
    np.testing.assert_array_equal(rows[:, 1:].reshape(5, 7, 3), rgb)


def test_colour_runs_dark_to_bright_and_greys_what_is_hidden():
    rgb = colour(np.array([0.0, 0.5, 1.0, np.nan]), hidden=np.array([False, False, False, True]))
    brightness = rgb.astype(int).sum(axis=1)
    assert brightness[0] < brightness[1] < brightness[2]
    assert tuple(rgb[3]) == (214, 214, 214)


@pytest.mark.parametrize("args, message", [
    (["--layer", "1"], "--html"),
    (["--head", "0"], "--html"),
    (["--html", "PAGE", "--layer", "12"], "12 layers, 0 to 11"),
    (["--html", "PAGE", "--head", "12"], "12 heads per layer, 0 to 11"),
    (["--html", "PAGE", "--save", "PAGE"], "--html"),
])
def test_attention_choices_and_outputs_are_checked_before_any_work(tmp_path, capsys, args, message):
    args = [str(tmp_path / "p.html") if a == "PAGE" else a for a in args]
    assert main(["explain", "--samples", "800", *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "p.html").exists()


@pytest.mark.parametrize("name,leaks", [("tiny_data2vec_audio", "the stack of positional convs"),
                                        ("tiny_hubert_bn", "the positional conv's batch norm"),
                                        ("tiny_xvector_weighted", "the x-vector pooling"),
                                        ("tiny_stable", None)])
def test_the_promise_figure_sets_transformers_way_beside_wherever_padding_can_leak(tmp_path, name, leaks):
    """Layer-normed conv layers let no padding in, but HuBERT's batch norm and data2vec's convs do."""
    path = tmp_path / "page.html"
    assert main(["explain", "-m", str(GOLDEN / name), "--samples", "16000", "6000", "--html", str(path),
                 "--quiet"]) == 0
    worst = {}
    for dot in Page(path.read_text(encoding="utf-8")).find("promise", "circle", data_item=1):
        worst[dot["data-series"]] = max(worst.get(dot["data-series"], 0), float(dot["data-difference"]))
    if leaks is None:
        assert list(worst) == ["npw2v2, the padded batch"] and worst["npw2v2, the padded batch"] < 1e-4
        return
    (ours, theirs) = sorted(worst)
    assert ours == f"npw2v2: padding kept out of {leaks}" and theirs == f"transformers: padding let into {leaks}"
    assert worst[ours] < 1e-4 < 1e-3 < worst[theirs]  # item 1 is the shorter: padding leaks into it
