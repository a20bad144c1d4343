from mupspec.cli import main

raise SystemExit(main())
