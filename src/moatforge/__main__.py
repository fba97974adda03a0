from moatforge.cli import main

raise SystemExit(main())
