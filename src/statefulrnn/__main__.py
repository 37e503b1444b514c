from statefulrnn.cli import main

raise SystemExit(main())
