"""Below the course's kernels, importing none of them: MNIST and Fashion-MNIST (`data`), a user's images
(`images`), checkpoint files written atomically and read with ``weights_only=True`` (`checkpoint_files`),
device choice and seeding (`hardware`), input checks (`validate`), progress bars (`progress`), streamed
softmax attention over patches (`patch_attention`) and the digit classifier network (`classifier`)."""
