# s26/r2, run as one command on the same machine right after r1: r1/run.sh (there
# .gpu-engine/r.sh) edited to a GPU-scoring stride of 64 and to its two ceiling runs only.
sed -i 's/--retrieval_stride 4096/--retrieval_stride 64/; s/^go main /#go main /; s/^go old1/#go old1/; s/^go new2/#go new2/; s/^go old2/#go old2/' .gpu-engine/r.sh && bash .gpu-engine/r.sh 2>&1 | tail -30
