"""Edit distance and error rates against hand-counted cases."""
import pytest

from npw2v2.app.metrics import char_error_rate, edit_distance, word_error_rate


@pytest.mark.parametrize("a, b, distance", [
    ("", "", 0), ("abc", "", 3), ("", "ab", 2), ("kitten", "sitting", 3), ("flaw", "lawn", 2),
    (["ONE", "TWO"], ["ONE", "TOO", "THREE"], 2),
])
def test_edit_distance(a, b, distance):
    assert edit_distance(a, b) == distance == edit_distance(b, a)


def test_error_rates_sum_over_pairs():
    refs, hyps = ["ONE TWO THREE", "FOUR"], ["ONE TOO THREE", "FOUR FIVE"]
    assert word_error_rate(refs, hyps) == 2 / 4
    assert char_error_rate(["AB", "CD"], ["AB", "C"]) == 1 / 4
    with pytest.raises(ValueError):
        word_error_rate(["A"], [])
