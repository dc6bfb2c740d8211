from domarkx.cli.main import main

raise SystemExit(main())
