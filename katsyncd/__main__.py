from katsyncd.cli import main

raise SystemExit(main())
