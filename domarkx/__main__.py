try:
    from domarkx.cli.main import main
except KeyboardInterrupt:  # Ctrl-C while the command loads: nothing ran yet
    import sys

    print("domarkx: interrupted", file=sys.stderr)
    raise SystemExit(130) from None

raise SystemExit(main())
