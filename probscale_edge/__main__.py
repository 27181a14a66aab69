from probscale_edge.cli import main

main()
