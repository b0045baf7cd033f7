from l4lb.cli import main

raise SystemExit(main())
