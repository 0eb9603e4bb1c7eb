"""One module per ``gdcode`` subcommand (registered in :data:`gdcode.cli.SUBCOMMANDS`)."""
