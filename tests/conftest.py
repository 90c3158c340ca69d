import sys
from pathlib import Path

# tests/golden.py is a helper module beside the tests, imported as `golden`.
sys.path.insert(0, str(Path(__file__).resolve().parent))
