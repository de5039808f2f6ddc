"""What a user runs: one image into its folder and batches on any executor, the memory budget, the live server
(its page's HTML and JavaScript are files in ``static/``), and the command line.  Imports every wing."""
