from run_s3fs.cli import main

main()
