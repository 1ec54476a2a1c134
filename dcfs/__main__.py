from dcfs.cli import main

raise SystemExit(main())
