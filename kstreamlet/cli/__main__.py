from kstreamlet.cli import main

raise SystemExit(main())
