import sys
from pathlib import Path

# The plain-loop references in tests/reference.py are imported by name.
sys.path.insert(0, str(Path(__file__).parent))
