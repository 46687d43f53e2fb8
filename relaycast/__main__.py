from relaycast.cli import main

raise SystemExit(main())
