from backline.cli import main

raise SystemExit(main())
