"""Evaluation metrics: FID, Inception Score, CLIP score and the attribute classifier.

* `fid`, `inception_score`: the FID and IS maths.
* The FID Inception, which also gives COCO's IS: `inception_net` (the Flax network),
  `inception_weights` (its weight files), `inception_input` (how images are fed to it),
  `inception_features` (its features and ImageNet probabilities of batches of images).
* `slim_inception`: StackGAN's fine-tuned Inception, for the IS of CUB and Oxford-102.
* `attribute_classifier`: attribute accuracy on the synthetic birds.
* CLIP, for GALIP's CLIP score: `clip_net` (the Flax ViT and text transformer), `clip_weights`
  (OpenAI's `.pt` and Hugging Face's files), `clip_tokenizer` (`clip.tokenize`), `clip_score`
  (GALIP's preprocessing and score).
"""
