from edgepipe.cli import main

if __name__ == "__main__":  # not when multiprocessing re-imports the main module
    main()
