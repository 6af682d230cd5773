"""``python -m featviz ...`` is the ``featviz`` command."""
import sys

from .cli import main

sys.exit(main())
