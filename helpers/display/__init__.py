"""What the notebooks show: figures titled with their profile (`plotting`) and the sliders (`explore`)."""
