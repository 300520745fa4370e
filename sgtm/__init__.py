"""SGTM (saliency-guided fine-grained temporal mask learning, ACM MM'24), imported as
``fsarbench_sgtm``; built only on fsarbench's public API."""
