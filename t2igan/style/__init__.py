"""Neural style transfer (Gatys, Ecker and Bethge, CVPR 2016) on VGG-19 features."""
