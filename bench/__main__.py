"""C{python -m bench}: run the benchmark (see L{bench.run})."""

from .run import main

raise SystemExit(main())
