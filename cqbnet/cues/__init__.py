"""Image cues the weak methods share: GrabCut (paper 001's thing cue, paper 002's segment re-estimation), selective
search segment proposals (papers 001 and 002), the dense CRF (paper 001's refinement, paper 003's offline recipe)
and LAB colour affinities (Box2Mask's pairwise term, paper 003's colour prior). Each reads an image and returns
arrays; none knows a network."""
