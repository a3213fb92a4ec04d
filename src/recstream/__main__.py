from recstream.cli import run

run()
