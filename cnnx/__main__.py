from cnnx.cli import main

main()
