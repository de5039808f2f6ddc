"""The arithmetic of any value, as data (``arithmetic``), and its terminal views (``views``).  Imports the wings
below: ``base``, ``compute``, ``io`` and ``sources``."""
