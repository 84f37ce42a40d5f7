"""What every stage of a run shares with the machine: precision and threads, processes, progress, output, folders."""
